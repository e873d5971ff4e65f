-- The reads of one instant, in one call: a batch's first read (executor/infra/batch_read.py).
-- KEYS: the keys read. ARGV[1]: a msgpack array of reads, each {command, key's index into
-- KEYS, arguments...}. Returns each read's reply in its place, as a MULTI would, a read that
-- failed (WRONGTYPE) as its error there. Reads only: anything else is refused whole.
local READS = {GET = true, HGET = true, HLEN = true, HGETALL = true, HMGET = true}
local reads = cmsgpack.unpack(ARGV[1])
for _, read in ipairs(reads) do
  if not READS[read[1]] then
    return redis.error_reply('reads.lua: ' .. tostring(read[1]) .. ' is not a read it makes')
  end
end
local out = {}
for i, read in ipairs(reads) do
  out[i] = redis.pcall(read[1], KEYS[read[2]], unpack(read, 3))
end
return out
