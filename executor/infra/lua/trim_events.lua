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
-- Needs stream_ids.lua (earliest) before it.
local cursor = redis.call('GET', KEYS[2])
if not cursor then
  return {0, ''}  -- nothing folded yet: every entry is still to be read
end
local held = {cursor}
local readers = redis.call('HGETALL', KEYS[3])
for i = 2, #readers, 2 do
  held[#held + 1] = readers[i]
end
local base = redis.call('GET', KEYS[6])
local removed, point_id = 0, nil
if base then
  held[#held + 1] = base
  point_id = earliest(ARGV[1], held)
  if point_id then
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
if not point_id then
  return {0, ''}
end
return {removed, point_id}
