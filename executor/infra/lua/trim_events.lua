-- Trim the events log behind everyone who must read it, and checkpoint the positions.
--
-- An entry goes only once it is older than the retention cutoff AND the positions fold has
-- folded it (its cursor) AND every registered reader has processed it (the readers hash:
-- reader -> last entry id it durably processed, e.g. an archive) AND it is not after the
-- positions checkpoint taken by the previous call. Then the positions and their cursor are
-- copied as the new checkpoint: the log always keeps every entry after the checkpoint, so
-- replay can check the positions as checkpoint + the fills after it.
-- Nothing is trimmed before the fold has a cursor or before a first checkpoint exists; a
-- reader whose value is not an entry id holds everything (fail safe). Idempotent, and
-- atomic, so any worker may run it at any time.
--
-- KEYS: 1 events, 2 positions cursor, 3 readers, 4 positions, 5 checkpoint (positions
--       copy), 6 checkpoint cursor, 7 the trim point (entries before it may be gone: replay
--       then starts the positions from the checkpoint)
-- ARGV: 1 cutoff entry id ("<ms>-0": entries before it are past the retention window),
--       2 most entries removed by this call (bounds its time)
-- Returns {entries removed, the trim point ('' when nothing could be trimmed)}.
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

local cursor = redis.call('GET', KEYS[2])
if not cursor then
  return {0, ''}  -- nothing folded yet: every entry is still to be read
end
local point, point_id = parse(ARGV[1]), ARGV[1]
local held = {cursor}
local readers = redis.call('HGETALL', KEYS[3])
for i = 2, #readers, 2 do
  held[#held + 1] = readers[i]
end
local base = redis.call('GET', KEYS[6])
local removed = 0
if base then
  held[#held + 1] = base
  for _, id in ipairs(held) do
    local at = parse(id)
    if not at then
      point = nil  -- unreadable: hold everything
      break
    end
    if before(at, point) then
      point, point_id = at, id
    end
  end
  if point then
    removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', point_id, 'LIMIT', ARGV[2])
    if removed > 0 then
      redis.call('SET', KEYS[7], point_id)
    end
  end
end
-- The new checkpoint: the positions with the cursor they are folded to (written together
-- by positions.lua, so read together here they agree).
redis.call('DEL', KEYS[5])
local positions = redis.call('HGETALL', KEYS[4])
for i = 1, #positions, 1000 do
  redis.call('HSET', KEYS[5], unpack(positions, i, math.min(i + 999, #positions)))
end
redis.call('SET', KEYS[6], cursor)
if not base or not point then
  return {0, ''}
end
return {removed, point_id}
