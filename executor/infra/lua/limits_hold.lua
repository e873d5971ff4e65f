-- Stop every worker sending to a broker account until a time: a pause (the broker's
-- Retry-After on HTTP 429) or a ban (HTTP 418). A later end wins; an earlier one never
-- shortens what another worker set.
--
-- KEYS: 1 pause or ban key (epoch ms until which nothing may be sent)
-- ARGV: 1 duration in ms from now, 2 now in us (0: the server's clock)
-- Returns {until ms, now ms}.
local now_us = tonumber(ARGV[2])
if now_us == 0 then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now = math.floor(now_us / 1000)
local until_ms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < until_ms then
  redis.call('SET', KEYS[1], until_ms, 'PX', until_ms - now)
  return {until_ms, now}
end
return {current, now}
