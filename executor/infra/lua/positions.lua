-- Store folded positions and move the cursor, if this worker still holds the projector
-- lease and nobody moved the cursor meanwhile: so every fill counts exactly once, even
-- when the lease changes hands mid-fold. In the same step, the pre-trade risk state the
-- fills move (executor/risk/fills.py): reservations shrink by their fills and go when
-- their order ends, their released totals grow, the day's realized PnL is set, the
-- accounts' versions are bumped; so quantity is always either reserved or held, never
-- both or neither.
-- KEYS: 1 positions hash, 2 cursor, 3 lease, then the risk keys the operations name.
-- ARGV: 1 lease holder, 2 expected cursor ('' for none), 3 new cursor, 4 day hash TTL
-- (ms), 5 number of positions, then field, position pairs, then operations of four
-- arguments each (name, index of its key in KEYS, field, value):
--   'expect': the field still holds the value (checked before anything is written)
--   'set':    set the field      'drop': delete the field
--   'count':  increment the field by an integer (deleted at 0)
--   'day':    set the field and renew the key's TTL
--   'bump':   increment the key
-- Returns 1 when written, 0 when the lease, the cursor or an expected value moved.
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 0
end
local cursor = redis.call('GET', KEYS[2]) or ''
if cursor ~= ARGV[2] then
  return 0
end
local first = 6 + 2 * tonumber(ARGV[5])
for i = first, #ARGV, 4 do
  if ARGV[i] == 'expect' and
      redis.call('HGET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]) ~= ARGV[i + 3] then
    return 0
  end
end
for i = 6, first - 1, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
for i = first, #ARGV, 4 do
  local op, key, field, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op == 'set' then
    redis.call('HSET', key, field, value)
  elseif op == 'drop' then
    redis.call('HDEL', key, field)
  elseif op == 'count' then
    if redis.call('HINCRBY', key, field, value) == 0 then
      redis.call('HDEL', key, field)
    end
  elseif op == 'day' then
    redis.call('HSET', key, field, value)
    redis.call('PEXPIRE', key, ARGV[4])
  elseif op == 'bump' then
    redis.call('INCR', key)
  end
end
redis.call('SET', KEYS[2], ARGV[3])
return 1
