-- Keep this worker's in-flight requests claimed: reset the idle time of each pending entry
-- this consumer still owns (XCLAIM JUSTID to itself: no delivery counted), so no other
-- worker's reclaim pass takes a request while it is being worked on (a broker slow to
-- answer, a rate-limit wait, a lookup window). An entry another worker has taken over, or
-- one already acknowledged, is left alone.
-- KEYS[1] pending stream. ARGV[1] group, ARGV[2] this consumer, ARGV[3..] entry ids.
-- Returns the ids no longer ours.
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  else
    lost[#lost + 1] = id
  end
end
return lost
