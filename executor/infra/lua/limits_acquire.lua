-- Take capacity from every shared rate limit of one broker account at once: the largest
-- number of the units asked for that fits all limits now, or none. The arithmetic is
-- executor/limits/windows.py's ``take`` (its specification, tested against this script);
-- numbers here are integers well below 2^53, so Lua's doubles hold them exactly.
--
-- Time is the Redis server's (TIME), so the workers' clocks do not matter.
--
-- KEYS: 1 windows hash (per window: <name> = use, <name>:at = window index;
--       rate:tat = the GCRA's theoretical arrival time in us), 2 pause key, 3 ban key
--       (each: epoch ms until which nothing may be sent), 4 the hash of the windows that
--       count weight (an IP group's, shared by its accounts; else KEYS[1] itself)
-- ARGV: 1 units asked for, 2 now in us (0: the server's clock; tests pass their own),
--       3 weight per unit, 4 orders per unit,
--       5 GCRA interval in us (0: no rate), 6 GCRA burst,
--       then per window: name, size in ms, cap, 1 if it counts weight (else orders)
-- Returns {granted, wait ms (-1: never fits), now ms, limit that makes the wait,
--          use of each window after the take..., orders in the GCRA's burst (if a rate)}
local now_us = tonumber(ARGV[2])
if now_us == 0 then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now = math.floor(now_us / 1000)

for i, name in ipairs({'ban', 'pause'}) do
  local until_ms = tonumber(redis.call('GET', KEYS[4 - i]) or '0')
  if until_ms > now then
    return {0, until_ms - now, now, name}
  end
end

local n = tonumber(ARGV[1])
local weight, orders = tonumber(ARGV[3]), tonumber(ARGV[4])
local interval, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
local k = n

local windows = {}
local longest, longest_weight = 0, 0
for i = 7, #ARGV, 4 do
  local size, cap = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local cost, key = orders, KEYS[1]
  if ARGV[i + 3] == '1' then
    cost, key = weight, KEYS[4]
    if size > longest_weight then longest_weight = size end
  elseif size > longest then
    longest = size
  end
  local index = math.floor(now / size)
  local got = redis.call('HMGET', key, ARGV[i], ARGV[i] .. ':at')
  local used = 0
  if tonumber(got[2]) == index then used = tonumber(got[1]) end
  if cost > 0 then
    k = math.min(k, math.floor(math.max(cap - used, 0) / cost))
  end
  windows[#windows + 1] = {ARGV[i], size, cap, cost, index, used, key}
end

local tat = now_us
if interval > 0 and orders > 0 then
  tat = math.max(tonumber(redis.call('HGET', KEYS[1], 'rate:tat') or '0'), now_us)
  local room = burst * interval - (tat - now_us)
  k = math.min(k, math.floor(math.max(room, 0) / (interval * orders)))
end

local wait, blocked_by = 0, ''
local reply = {k, 0, now, ''}
for _, w in ipairs(windows) do
  local name, size, cap, cost, index, used, key = w[1], w[2], w[3], w[4], w[5], w[6], w[7]
  local now_used = used + k * cost
  if k > 0 and cost > 0 then
    redis.call('HSET', key, name, now_used, name .. ':at', index)
  end
  reply[#reply + 1] = now_used
  if k < n and cost > 0 and now_used + cost > cap then
    local need = -1
    if cost <= cap then need = (index + 1) * size - now end
    if wait ~= -1 and (need == -1 or need > wait) then
      wait, blocked_by = need, name
    end
  end
end

if interval > 0 then
  if k > 0 and orders > 0 then
    tat = tat + k * orders * interval  -- tat: max(stored, now), read above
    redis.call('HSET', KEYS[1], 'rate:tat', tat)
    if longest < 1000 then longest = 1000 end
  else
    tat = tonumber(redis.call('HGET', KEYS[1], 'rate:tat') or '0')
  end
  reply[#reply + 1] = math.ceil(math.max(tat - now_us, 0) / interval)
  if k < n and orders > 0 then
    local need = -1
    if orders <= burst then
      local need_us = math.max(math.max(tat, now_us) + orders * interval - burst * interval
        - now_us, 0)
      need = math.ceil(need_us / 1000)
    end
    if need ~= 0 and wait ~= -1 and (need == -1 or need > wait) then
      wait, blocked_by = need, 'orders_per_second'
    end
  end
end

-- Kept while any window could still count it (the day's for a day), then dropped; a
-- group's hash is only ever extended, as another account of the group may need it longer.
if KEYS[4] == KEYS[1] then
  longest = math.max(longest, longest_weight)
elseif k > 0 and longest_weight > 0 and redis.call('PTTL', KEYS[4]) < 2 * longest_weight then
  redis.call('PEXPIRE', KEYS[4], 2 * longest_weight)
end
if k > 0 and longest > 0 then
  redis.call('PEXPIRE', KEYS[1], 2 * math.max(longest, burst * math.ceil(interval / 1000)))
end
reply[2], reply[4] = wait, blocked_by
return reply
