-- Raise the shared window counters of a broker account to at least the use the broker
-- itself reports (Binance's X-MBX-USED-WEIGHT-1M, X-MBX-ORDER-COUNT-10S/-1D headers): it
-- also counts what was sent around us (other programs, other processes on the key).
-- Never lowered: our own count may include calls the broker has not answered yet.
--
-- KEYS: 1 windows hash (see limits_acquire.lua)
-- ARGV: 1 now in us (0: the server's clock), then per window: name, size in ms, use
-- Returns the use of each window afterwards.
local now_us = tonumber(ARGV[1])
if now_us == 0 then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now = math.floor(now_us / 1000)
local reply = {}
local longest = 0
for i = 2, #ARGV, 3 do
  local size, reported = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local index = math.floor(now / size)
  local got = redis.call('HMGET', KEYS[1], ARGV[i], ARGV[i] .. ':at')
  local used = 0
  if tonumber(got[2]) == index then used = tonumber(got[1]) end
  if reported > used then
    used = reported
    redis.call('HSET', KEYS[1], ARGV[i], used, ARGV[i] .. ':at', index)
  end
  if size > longest then longest = size end
  reply[#reply + 1] = used
end
if longest > 0 and redis.call('PTTL', KEYS[1]) < 2 * longest then
  redis.call('PEXPIRE', KEYS[1], 2 * longest)
end
return reply
