-- The emulator's writes to an emulated order (brokers/emulating.py, background/emulator.py).
-- Each is one compare-and-set on the order's record, so a cancel and a trigger racing for
-- one held order cannot both win, and an emulator whose lease has moved on writes nothing.
--
-- Record fields: 'emulation' (held, triggered, released, cancelled), 'held' (the
-- emulator's state, JSON), 'sender' / 'release_sender' (send tokens, see send.lua).
--
-- ARGV[1] the operation:
--   hold      KEYS order, index; ARGV token, held JSON, client id. The order must be
--             pending_submit; its send token is taken for this delivery (as send.lua
--             does): holding it is its send. An empty JSON takes the token only (the
--             order is refused, not held). 1 held (now or by this delivery before),
--             0 another delivery holds the token, -1 no longer pending_submit.
--   track     KEYS order, lease; ARGV lease token, held JSON: a held order's new state.
--   trigger   KEYS order, lease; ARGV lease token, held JSON: held -> triggered.
--             track and trigger: 1 written, -2 the lease is not the caller's, -1 the
--             order is not held (cancelled, or triggered by another).
--   released  KEYS order, index; ARGV client id: triggered -> released, out of the index.
--   refused   KEYS order, index; ARGV client id, reason: triggered -> refused (the broker
--             refused the release for good; a lookup answers rejected with the reason).
--   cancel    KEYS order, index; ARGV client id: held -> cancelled, out of the index.
--   expire    KEYS order, index; ARGV client id: held -> expired (gtd), out of the index.
--             released and cancel: 1 done, 0 not in the state it needs (the record's
--             'emulation' is returned as a second value).
--   unknown   KEYS order; ARGV token: the release's outcome is unknown: its token becomes
--             '<token>:unknown', held by nobody, so the order is only looked up.
--   forget    KEYS order, index; ARGV client id: out of the index when the record is gone
--             or its emulation over. 1 removed, 0 kept.
local op = ARGV[1]
local order = KEYS[1]
if op == 'hold' then
  if redis.call('HGET', order, 'state') ~= 'pending_submit' then
    return -1
  end
  if redis.call('HSETNX', order, 'sender', ARGV[2]) == 0
      and redis.call('HGET', order, 'sender') ~= ARGV[2] then
    return 0
  end
  if ARGV[3] ~= '' and not redis.call('HGET', order, 'emulation') then
    redis.call('HSET', order, 'emulation', 'held', 'held', ARGV[3])
    redis.call('SADD', KEYS[2], ARGV[4])
  end
  return 1
end
if op == 'track' or op == 'trigger' then
  if redis.call('GET', KEYS[2]) ~= ARGV[2] then
    return -2
  end
  if redis.call('HGET', order, 'emulation') ~= 'held' then
    return -1
  end
  redis.call('HSET', order, 'held', ARGV[3])
  if op == 'trigger' then
    redis.call('HSET', order, 'emulation', 'triggered')
  end
  return 1
end
if op == 'unknown' then
  -- KEYS order; ARGV token: the release under this token may have reached the broker
  -- (its answer was lost): the token is marked so that nobody, its holder included, sends
  -- it again; the order is looked up instead (background/emulator.py).
  if redis.call('HGET', order, 'emulation') == 'triggered'
      and redis.call('HGET', order, 'release_sender') == ARGV[2] then
    redis.call('HSET', order, 'release_sender', ARGV[2] .. ':unknown')
    return 1
  end
  return 0
end
local now = redis.call('HGET', order, 'emulation')
local moves = {released = {'triggered', 'released'}, refused = {'triggered', 'refused'},
               cancel = {'held', 'cancelled'}, expire = {'held', 'expired'}}
local move = moves[op]
if move then
  if now ~= move[1] then
    return {0, now or false}
  end
  redis.call('HSET', order, 'emulation', move[2])
  if op == 'refused' then
    redis.call('HSET', order, 'release_error', ARGV[3])
  end
  redis.call('SREM', KEYS[2], ARGV[2])
  return {1, now}
end
if op == 'forget' then
  if now == 'held' or now == 'triggered' then
    return 0
  end
  return redis.call('SREM', KEYS[2], ARGV[2])
end
return redis.error_reply('emulation.lua: unknown operation ' .. tostring(op))
