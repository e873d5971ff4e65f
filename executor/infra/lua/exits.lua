-- The emulator's writes to a position's stop-loss / take-profit (background/exits.py): each
-- a compare-and-set on the exit's JSON that re-checks the account's emulator lease, so an
-- exit fires once, whoever emulates the account, and an operator's change in between
-- (orderstream sl-tp) is never overwritten.
--
-- KEYS: 1 the account's exits hash, 2 its emulator lease, 3 the pending stream, 4 the hash
-- symbol -> the pending entry of the exit's last closing request, 5 the hash symbol ->
-- the direction of the position its automatic exit was made for ([exits.<account>])
-- ARGV: 1 op, 2 lease token, 3 symbol, 4 the JSON the caller read, 5 the new JSON
--   write: the new state.   done: the exit is over (HDEL).
--   fire:  the new state (its closing order in flight) and, in the same call, the closing
--          order's request on the pending stream: ARGV 6.. its entry's field, value pairs.
--   auto:  a position opened: ARGV 5 its automatic exit (empty: keep the one there is, an
--          operator's), ARGV 6 its direction, the marker that it was made.
--   closed: the position is flat: its marker goes (the next opening gets an exit again).
-- Returns 1 written, 0 the exit changed meanwhile (nothing written), -2 the lease is not
-- the caller's.
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return -2
end
local op = ARGV[1]
if op == 'auto' then
  -- A position opened (ARGV[6]: long or short, KEYS[5] the account's markers): its
  -- automatic exit (ARGV[5]; empty: the one there is stays) and the marker, together.
  if (redis.call('HGET', KEYS[1], ARGV[3]) or '') ~= ARGV[4] then
    return 0
  end
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
  end
  redis.call('HSET', KEYS[5], ARGV[3], ARGV[6])
  return 1
end
if op == 'closed' then
  redis.call('HDEL', KEYS[5], ARGV[3])
  return 1
end
if redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[4] then
  return 0
end
if op == 'done' then
  redis.call('HDEL', KEYS[1], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
if op == 'fire' then
  local fields = {}
  for i = 6, #ARGV do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[4], ARGV[3], redis.call('XADD', KEYS[3], '*', unpack(fields)))
end
return 1
