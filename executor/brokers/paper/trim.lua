-- Forget what the paper exchange no longer needs: orders finished before the cutoff (their
-- records), and the entries of its streams older than it. Open orders are never touched.
-- Run by the matcher (one worker at a time); idempotent, so a second run is harmless.
--
-- KEYS: 1 orders, 2 finished, 3 received, 4 duplicates, 5 executions
-- ARGV: 1 cutoff (epoch ms), 2 most orders forgotten, and most entries removed from each
--       stream, by this call (bounds its time)
-- Returns {orders forgotten, stream entries removed}: the caller calls again while either
-- shows there may be more.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then
  redis.call('HDEL', KEYS[1], unpack(ids))
  redis.call('ZREM', KEYS[2], unpack(ids))
end
-- Approximate (whole stream nodes): cheap, and never removes an entry after the cutoff.
local removed = 0
for k = 3, 5 do
  removed = removed + redis.call('XTRIM', KEYS[k], 'MINID', '~', ARGV[1] .. '-0', 'LIMIT',
    ARGV[2])
end
return {#ids, removed}
