-- Entry id helpers of the trim scripts, prepended to them by retention.py (a script cannot
-- import another). An entry id is "<ms>-<seq>".

-- {ms, seq} of an entry id, nil when the text is not one.
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  if not ms then
    return nil
  end
  return {tonumber(ms), tonumber(seq)}
end

local function before(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

-- The earliest of point_id and the ids (as given), or nil when one of them is not an entry
-- id: a position that cannot be read holds everything (fail safe).
local function earliest(point_id, ids)
  local point = parse(point_id)
  if not point then
    return nil
  end
  for _, id in ipairs(ids) do
    local at = parse(id)
    if not at then
      return nil
    end
    if before(at, point) then
      point, point_id = at, id
    end
  end
  return point_id
end

