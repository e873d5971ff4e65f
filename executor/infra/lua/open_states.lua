-- How many open orders are in each state, for the orders-by-state gauge (probes.py): a
-- tiny reply instead of every record. One call counts one SSCAN step of the open set
-- (about COUNT orders, 3 us each in Redis), so that counting thousands never holds Redis
-- for long: the caller calls again with the cursor returned until it is 0, adding up.
-- Reads the order hashes by name (they share the prefix, so with a hash-tag prefix they
-- share the slot of KEYS[1]).
-- KEYS[1] open set. ARGV[1] order key prefix ("<prefix>:order:"), ARGV[2] the SSCAN
-- cursor ("0" to start), ARGV[3] its COUNT, ARGV[4] most orders counted: above it nothing
-- is counted.
-- Returns {next cursor, size of the open set, state1, count1, state2, count2, ...}.
local total = redis.call('SCARD', KEYS[1])
if total > tonumber(ARGV[4]) then
  return {'0', total}
end
local scan = redis.call('SSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local counts = {}
for _, cid in ipairs(scan[2]) do
  local state = redis.call('HGET', ARGV[1] .. cid, 'state') or 'missing'
  counts[state] = (counts[state] or 0) + 1
end
local out = {scan[1], total}
for state, n in pairs(counts) do
  out[#out + 1] = state
  out[#out + 1] = n
end
return out
