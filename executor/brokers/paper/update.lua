-- Store new states of existing orders, each only if its version is still the one it was
-- computed from (compare-and-set), so two matchers, or a cancel racing a fill, can never
-- both apply. Each applied change may append a report to the executions stream.
--
-- A change may carry a new order placed with it, in the same step: the native exit of an
-- entry the change fills (lists.py), stored only if the change applies, and only if its
-- client id is free, so it is never placed twice nor lost when the fill is stored.
--
-- KEYS: 1 orders, 2 book, 3 expiry, 4 executions, 5 finished, 6 received, 7.. watch zsets
-- ARGV: 1 executions max length (approximate), 2 now (epoch ms), 3 number of changes, then
--       12 per change: cid, expected version, record, open ("1"/"0"), watch key index to
--       leave (0: none), watch key index to join (0: none), its score, report ("": none),
--       then the order placed with it: cid, record ("": none), its watch key index (0:
--       none, it ended at once), its score
-- Returns one integer per change: 1 applied, 0 refused (version moved on, or no order).
-- An order a change ends joins "finished" at now (trim.lua forgets it after retention_ms).
local orders, book, expiry, executions, finished = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local received = KEYS[6]
local maxlen, now = ARGV[1], ARGV[2]
local out = {}
local i = 4
for n = 1, tonumber(ARGV[3]) do
  local cid = ARGV[i]
  local current = redis.call('HGET', orders, cid)
  -- The record is JSON whose first member is the version: {"version":N,...
  local version = current and string.match(current, '^{"version":(%d+)')
  if version and version == ARGV[i + 1] then
    redis.call('HSET', orders, cid, ARGV[i + 2])
    local leave, join = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
    if leave > 0 then
      redis.call('ZREM', KEYS[leave], cid)
    end
    if join > 0 then
      redis.call('ZADD', KEYS[join], ARGV[i + 6], cid)
    end
    if ARGV[i + 3] ~= '1' then
      redis.call('SREM', book, cid)
      redis.call('ZREM', expiry, cid)
      redis.call('ZADD', finished, now, cid)
    end
    if ARGV[i + 7] ~= '' then
      redis.call('XADD', executions, 'MAXLEN', '~', maxlen, '*', 'data', ARGV[i + 7])
    end
    local placed, watch = ARGV[i + 8], tonumber(ARGV[i + 10])
    if ARGV[i + 9] ~= '' and redis.call('HSETNX', orders, placed, ARGV[i + 9]) == 1 then
      redis.call('XADD', received, '*', 'client_order_id', placed)
      if watch > 0 then
        redis.call('SADD', book, placed)
        redis.call('ZADD', KEYS[watch], ARGV[i + 11], placed)
      else
        redis.call('ZADD', finished, now, placed)
      end
    end
    out[n] = 1
  else
    out[n] = 0
  end
  i = i + 12
end
return out
