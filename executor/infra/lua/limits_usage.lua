-- Raise the shared window counters of a broker account to at least the use the broker
-- itself reports (Binance's X-MBX-USED-WEIGHT-1M, X-MBX-ORDER-COUNT-10S/-1D headers): it
-- also counts what was sent around us (other programs, other processes on the key).
-- Never lowered: our own count may include calls the broker has not answered yet.
--
-- KEYS: 1 windows hash, 2 the hash of the windows that count weight (see
--       limits_acquire.lua; KEYS[1] itself without an IP group)
-- ARGV: 1 now in us (0: the server's clock), then per window: name, size in ms, 1 if it
--       counts weight (else 0), use
-- Returns the use of each window afterwards.
local now_us = tonumber(ARGV[1])
if now_us == 0 then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now = math.floor(now_us / 1000)
local reply = {}
local longest = {0, 0}
for i = 2, #ARGV, 4 do
  local size, reported = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 3])
  local which = 1
  if ARGV[i + 2] == '1' then which = 2 end
  local key = KEYS[which]
  local index = math.floor(now / size)
  local got = redis.call('HMGET', key, ARGV[i], ARGV[i] .. ':at')
  local used = 0
  if tonumber(got[2]) == index then used = tonumber(got[1]) end
  if reported > used then
    used = reported
    redis.call('HSET', key, ARGV[i], used, ARGV[i] .. ':at', index)
  end
  if size > longest[which] then longest[which] = size end
  reply[#reply + 1] = used
end
-- Only ever extended (the same key twice without a group is harmless).
for which = 1, 2 do
  local key = KEYS[which]
  if longest[which] > 0 and redis.call('PTTL', key) < 2 * longest[which] then
    redis.call('PEXPIRE', key, 2 * longest[which])
  end
end
return reply
