-- Remove a consumer from the group once it is gone (no heartbeat) and owns no pending
-- entry. Atomic, so an entry delivered to it meanwhile is never dropped with it: XGROUP
-- DELCONSUMER discards the consumer's pending entries, which would lose requests.
-- KEYS: 1 the requests stream, 2 the consumer's heartbeat key. ARGV: 1 group, 2 consumer.
-- Returns 1 when removed, 0 when it is alive or still owns entries.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
-- pcall: with no stream or group (deleted under us) there is no consumer to remove.
local ok, owned = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok or #owned > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
