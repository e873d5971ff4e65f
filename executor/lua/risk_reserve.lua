-- Apply one batch's pre-trade reservations of one account, if its risk state is still the
-- one they were decided on (compare-and-set on the version), and release reservations of
-- requests that ended without their order. Every change increments the version, so a
-- worker that decided on an older state retries on the new one.
-- KEYS: 1 version, 2 open reservations hash, 3 day hash.
-- ARGV: 1 expected version ('*': do not compare, for releases only), 2 day hash TTL (ms),
-- 3 number of reservations, then (client id, reservation JSON, '1' to count it as an order
-- of the day or '0' for a redelivered one) triples, then (client id, request id) pairs to
-- release: deleted only while the reservation is still that request's.
-- Returns 1 when applied, 0 when the version moved.
local version = redis.call('GET', KEYS[1]) or '0'
if ARGV[1] ~= '*' and version ~= ARGV[1] then
  return 0
end
local i = 4
local counted = 0
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] == '1' then
    counted = counted + 1
  end
  i = i + 3
end
if counted > 0 then
  redis.call('HINCRBY', KEYS[3], 'orders', counted)
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
while i < #ARGV do
  local held = redis.call('HGET', KEYS[2], ARGV[i])
  if held and cjson.decode(held)['request_id'] == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
  i = i + 2
end
redis.call('INCR', KEYS[1])
return 1
