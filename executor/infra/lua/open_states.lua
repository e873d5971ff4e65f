-- How many open orders are in each state, for the orders-by-state gauge (probes.py): one
-- call with a tiny reply instead of fetching every record. Reads the order hashes by name
-- (they share the prefix, so with a hash-tag prefix they share the slot of KEYS[1]).
-- KEYS[1] open set. ARGV[1] order key prefix ("<prefix>:order:"), ARGV[2] most orders
-- counted: above it only the total is returned, so the script never blocks Redis long.
-- Returns {total, state1, count1, state2, count2, ...}.
local total = redis.call('SCARD', KEYS[1])
if total > tonumber(ARGV[2]) then
  return {total}
end
local counts = {}
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local state = redis.call('HGET', ARGV[1] .. cid, 'state') or 'missing'
  counts[state] = (counts[state] or 0) + 1
end
local out = {total}
for state, n in pairs(counts) do
  out[#out + 1] = state
  out[#out + 1] = n
end
return out
