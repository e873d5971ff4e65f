-- Apply pre-trade reservations of one account decided on one snapshot, if its risk state
-- is still that snapshot's as far as the checks are concerned (compare-and-set on the
-- checks' version, and on the JSON of every reservation deleted; executor/risk/state.py).
-- Every change increments both versions, so a worker that decided on an older state
-- decides again.
-- The decimal totals are computed by the caller (Lua numbers are doubles); only integer
-- counts are incremented here.
-- KEYS: 1 checks' version, 2 open reservations hash, 3 sums hash, 4 day hash, 5 version.
-- ARGV: 1 expected checks' version, 2 day hash TTL (ms), 3 orders of the day to add,
--   then n and n (client id, reservation JSON as read) pairs to delete,
--   then n and n (client id, reservation JSON) pairs to set,
--   then n and n (field, value) pairs of totals to set,
--   then (field, increment) pairs of order counts, to the end.
-- Returns 1 when applied, 0 when the version or a deleted reservation moved.
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then
  return 0
end
local i = 4
local n = tonumber(ARGV[i])
for j = 1, n do
  if redis.call('HGET', KEYS[2], ARGV[i + 2 * j - 1]) ~= ARGV[i + 2 * j] then
    return 0
  end
end
for j = 1, n do
  redis.call('HDEL', KEYS[2], ARGV[i + 2 * j - 1])
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', KEYS[3], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1
while i < #ARGV do
  if redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) == 0 then
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
  i = i + 2
end
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBY', KEYS[4], 'orders', ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
redis.call('INCR', KEYS[1])
redis.call('INCR', KEYS[5])
return 1
