-- Trim a result stream (completed or failed) behind its registered readers.
--
-- An entry goes once it is older than the retention cutoff, or beyond the stream's cap,
-- AND every registered reader has processed it (the readers hash: reader -> last entry id
-- of this stream it durably processed, e.g. the SQL archive). A reader whose value is not
-- an entry id holds everything (fail safe). Atomic: a reader registering (HSET ... 0-0)
-- cannot slip between the read of the hash and the trim and lose its unread entries.
-- Idempotent, so any worker may run it at any time.
--
-- The cap (results_maxlen): finish.lua caps with XADD MAXLEN only while the stream has no
-- reader, since a cap there would drop results a reader has not read. With readers the cap
-- is enforced here instead, behind them: only what every reader has read goes, and at most
-- the excess over the cap, so the stream keeps its newest `cap` entries. Without readers
-- it is applied here too, for the results written without one (reclaim.py's dead letters).
--
-- KEYS: 1 the result stream, 2 its readers hash
-- ARGV: 1 cutoff entry id ("<ms>-0": entries before it are past the retention window),
--       2 most entries removed by this call (bounds its time), 3 the cap (0: none)
-- Returns the entries removed.
-- Needs stream_ids.lua (earliest) before it.
local limit, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local readers = redis.call('HGETALL', KEYS[2])
local held = {}
for i = 2, #readers, 2 do
  held[#held + 1] = readers[i]
end
if #held == 0 then
  local removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[1], 'LIMIT', limit)
  if cap > 0 and removed < limit then
    removed = removed + redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', cap, 'LIMIT',
      limit - removed)
  end
  return removed
end
local point_id = earliest(ARGV[1], held)
if not point_id then
  return 0
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', point_id, 'LIMIT', limit)
local excess = cap > 0 and redis.call('XLEN', KEYS[1]) - cap or 0
if excess > 0 and removed < limit then
  -- LIMIT never 0 here (0 would mean no limit): excess > 0 and removed < limit.
  removed = removed + redis.call('XTRIM', KEYS[1], 'MINID', '~', earliest(held[1], held),
    'LIMIT', math.min(excess, limit - removed))
end
return removed
