-- Trim the requests stream below what every consumer group still needs: for each group,
-- entries up to its last delivered id that are not pending in it were acknowledged (they
-- are normally deleted at once by finish.lua; this catches those acked by older versions
-- or by other tools). Never an unread entry (after a group's last delivered id) nor one
-- still pending in any group. Without a group nothing is trimmed.
--
-- KEYS: 1 requests stream. ARGV: 1 most entries removed by this call.
-- Returns how many entries were removed.
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then
  return 0
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local low, low_id = nil, nil
for _, group in ipairs(groups) do
  local fields = {}
  for i = 1, #group, 2 do
    fields[group[i]] = group[i + 1]
  end
  local floor = fields['last-delivered-id']
  local summary = redis.call('XPENDING', KEYS[1], fields['name'])
  if tonumber(summary[1]) > 0 then
    local oldest = summary[2]
    local a, b = parse(oldest), parse(floor)
    if a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) then
      floor = oldest
    end
  end
  local at = parse(floor)
  if not low or at[1] < low[1] or (at[1] == low[1] and at[2] < low[2]) then
    low, low_id = at, floor
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', low_id, 'LIMIT', ARGV[1])
