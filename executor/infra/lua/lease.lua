-- A lease: one worker at a time holds it (the paper exchange's matcher, the positions
-- projector), renewing it while it works; it expires if the holder dies.
--
-- KEYS: 1 lease key
-- ARGV: 1 owner token, 2 time to live in ms (0: release)
-- Returns 1 if the caller holds the lease afterwards (acquired or renewed), else 0; on
-- release, 1 if it was held and is now gone.
local holder = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return 1
end
return 0
