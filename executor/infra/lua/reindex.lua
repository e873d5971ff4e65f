-- Set when the tracker must next look at orders it has read (executor/attention.py), each
-- only if its record is still at the seq it was read at: a record written since carries
-- its own time, written by its writer (begin.lua, finish.lua), which must stand. An order
-- whose record is gone (expired, deleted) leaves the index.
--
-- KEYS: per item, its order key then its account's attention index.
-- ARGV: 1 MessagePack array, 3 values per item: client id, seq read, due (epoch ms; 0:
--       leave the index), 2 'XX' (move an indexed order) or 'NX' (add a missing one)
local meta = cmsgpack.unpack(ARGV[1])
for i = 1, #KEYS / 2 do
  local order, index = KEYS[2 * i - 1], KEYS[2 * i]
  local cid, seq, due = meta[3 * i - 2], meta[3 * i - 1], meta[3 * i]
  local stored = redis.call('HGET', order, 'seq')
  if not stored then
    redis.call('ZREM', index, cid)
  elseif stored == tostring(seq) then
    if due == 0 then
      redis.call('ZREM', index, cid)
    else
      redis.call('ZADD', index, ARGV[2], due, cid)
    end
  end
end
return 0
