-- Store new states of existing orders, each only if its version is still the one it was
-- computed from (compare-and-set), so two matchers, or a cancel racing a fill, can never
-- both apply. Each applied change may append a report to the executions stream.
--
-- KEYS: 1 orders, 2 book, 3 expiry, 4 executions, 5 finished, 6.. watch zsets
-- ARGV: 1 executions max length (approximate), 2 now (epoch ms), 3 number of changes, then
--       8 per change: cid, expected version, record, open ("1"/"0"), watch key index to
--       leave (0: none), watch key index to join (0: none), its score, report ("": none)
-- Returns one integer per change: 1 applied, 0 refused (version moved on, or no order).
-- An order a change ends joins "finished" at now (trim.lua forgets it after retention_ms).
local orders, book, expiry, executions, finished = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
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
    out[n] = 1
  else
    out[n] = 0
  end
  i = i + 8
end
return out
