-- Store folded positions and move the cursor, if this worker still holds the projector
-- lease and nobody moved the cursor meanwhile: so every fill counts exactly once, even
-- when the lease changes hands mid-fold. In the same step, the pre-trade risk state the
-- fills move (executor/risk/state.py): reservations shrink by their fills and go when
-- their order ends, the day's realized PnL is set, the accounts' versions are bumped; so
-- quantity is always either reserved or held, never both or neither.
-- KEYS: 1 positions hash, 2 cursor, 3 lease, then the risk keys the operations name.
-- ARGV: 1 lease holder, 2 expected cursor ('' for none), 3 new cursor, 4 day hash TTL
-- (ms), 5 number of positions, then field, position pairs, then operations of four
-- arguments each (name, index of its key in KEYS, field, value):
--   'shrink': set a reservation, if it still exists (a release may have removed it)
--   'drop':   delete a reservation
--   'day':    set a field of a day hash and renew its TTL
--   'bump':   increment a version
-- Returns 1 when written, 0 when the lease or the cursor moved.
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 0
end
local cursor = redis.call('GET', KEYS[2]) or ''
if cursor ~= ARGV[2] then
  return 0
end
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  local op, key, field, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op == 'shrink' then
    if redis.call('HEXISTS', key, field) == 1 then
      redis.call('HSET', key, field, value)
    end
  elseif op == 'drop' then
    redis.call('HDEL', key, field)
  elseif op == 'day' then
    redis.call('HSET', key, field, value)
    redis.call('PEXPIRE', key, ARGV[4])
  elseif op == 'bump' then
    redis.call('INCR', key)
  end
  i = i + 4
end
redis.call('SET', KEYS[2], ARGV[3])
return 1
