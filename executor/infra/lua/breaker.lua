-- The circuit breaker of one broker account, shared by every worker: one hash, changed only
-- here, so two workers never both decide from a stale view. Times come from the server's
-- clock (TIME), so the workers' clocks do not matter. Integers only.
--
-- KEYS: 1 breaker hash.
-- ARGV: 1 op ('allow' | 'record' | 'reset'), 2 consecutive failures that open it,
--       3 error-rate window ms, 4 least calls in the window for the rate to count,
--       5 error rate (percent) that opens it, 6 cool-down ms, 7 probe ttl ms,
--       8 (record) outcomes in call order: S success, F failure, X fatal (opens at once).
-- Returns {state, wait ms, changed (0/1), probe (0/1)}:
--   allow: probe=1 lets the caller through as the half-open trial; state 'closed' lets it
--          through; otherwise wait ms until a trial may be granted.
--   record/reset: the state after, and whether it changed.
local h = KEYS[1]
local op = ARGV[1]
local threshold, window, min_calls = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rate, cooldown, probe_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local f = redis.call('HMGET', h, 'state', 'opened_at', 'probe_until', 'consecutive',
                     'window_start', 'calls', 'errors')
local state = f[1] or 'closed'
local opened_at = tonumber(f[2] or '0')
local probe_until = tonumber(f[3] or '0')

local function open()
  redis.call('HSET', h, 'state', 'open', 'opened_at', now, 'probe_until', 0)
  redis.call('HINCRBY', h, 'trips', 1)
end

if op == 'allow' then
  if state == 'closed' then
    return {state, 0, 0, 0}
  end
  if state == 'open' and now < opened_at + cooldown then
    return {state, opened_at + cooldown - now, 0, 0}
  end
  if state == 'half_open' and now < probe_until then
    return {state, probe_until - now, 0, 0}  -- another caller's trial is under way
  end
  redis.call('HSET', h, 'state', 'half_open', 'probe_until', now + probe_ttl)
  return {'half_open', 0, state ~= 'half_open' and 1 or 0, 1}
end

if op == 'reset' then
  redis.call('HSET', h, 'state', 'closed', 'consecutive', 0, 'window_start', now, 'calls', 0,
             'errors', 0, 'probe_until', 0)
  return {'closed', 0, state ~= 'closed' and 1 or 0, 0}
end

-- record
local consecutive = tonumber(f[4] or '0')
local window_start = tonumber(f[5] or '0')
local calls, errors = tonumber(f[6] or '0'), tonumber(f[7] or '0')
if now - window_start >= window then
  window_start, calls, errors = now, 0, 0
end
local fatal, failed, succeeded = false, false, false
local outcomes = ARGV[8]
for i = 1, #outcomes do
  local c = string.sub(outcomes, i, i)
  calls = calls + 1
  if c == 'S' then
    consecutive = 0
    succeeded = true
  else
    consecutive = consecutive + 1
    errors = errors + 1
    failed = true
    if c == 'X' then fatal = true end
  end
end
redis.call('HSET', h, 'consecutive', consecutive, 'window_start', window_start,
           'calls', calls, 'errors', errors)
local after = state
if state == 'half_open' then
  -- The trial (or any call meanwhile) decides: a failure reopens, a success closes.
  if failed then
    open()
    after = 'open'
  elseif succeeded then
    redis.call('HSET', h, 'state', 'closed', 'consecutive', 0, 'window_start', now,
               'calls', 0, 'errors', 0, 'probe_until', 0)
    after = 'closed'
  end
elseif state == 'closed' then
  if fatal or consecutive >= threshold
      or (calls >= min_calls and errors * 100 >= rate * calls) then
    open()
    after = 'open'
  end
end
return {after, 0, after ~= state and 1 or 0, 0}
