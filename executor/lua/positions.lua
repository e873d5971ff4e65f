-- Store folded positions and move the cursor, if this worker still holds the projector
-- lease and nobody moved the cursor meanwhile: so every fill counts exactly once, even
-- when the lease changes hands mid-fold.
-- KEYS: 1 positions hash, 2 cursor, 3 lease. ARGV: 1 lease holder, 2 expected cursor
-- ('' for none), 3 new cursor, then field, position pairs.
-- Returns 1 when written, 0 when the lease or the cursor moved.
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 0
end
local cursor = redis.call('GET', KEYS[2]) or ''
if cursor ~= ARGV[2] then
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[3])
return 1
