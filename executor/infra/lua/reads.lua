-- The reads of one instant, in one call: a batch's first read (executor/infra/batch_read.py).
-- KEYS: the keys read. ARGV[1]: a msgpack array of reads, each {command, key's index into
-- KEYS, arguments...}. Returns each read's reply in its place, as a MULTI would, a read that
-- failed (WRONGTYPE) as its error there. Reads only: anything else is refused whole.
-- POSITIONS {hash, indexed, of} (each a key's index into KEYS): the fields of the positions
-- hash that the account's set ``of`` names, as field/value pairs like HGETALL's, where the
-- sets are complete (``indexed`` holds as many fields as the hash: Keys.positions_indexed);
-- else the whole hash. The hash holds every account's positions: read whole on every
-- batch, it made each order's checks cost in proportion to all the accounts'.
local READS = {GET = true, HGET = true, HLEN = true, HGETALL = true, HMGET = true,
  POSITIONS = true}
local function positions(hash, indexed, of)
  if redis.call('SCARD', indexed) ~= redis.call('HLEN', hash) then
    return redis.call('HGETALL', hash)
  end
  local fields = redis.call('SMEMBERS', of)
  local out = {}
  for s = 1, #fields, 1000 do
    local last = math.min(s + 999, #fields)
    local values = redis.call('HMGET', hash, unpack(fields, s, last))
    for j = s, last do
      if values[j - s + 1] then
        table.insert(out, fields[j])
        table.insert(out, values[j - s + 1])
      end
    end
  end
  return out
end
local reads = cmsgpack.unpack(ARGV[1])
for _, read in ipairs(reads) do
  if not READS[read[1]] then
    return redis.error_reply('reads.lua: ' .. tostring(read[1]) .. ' is not a read it makes')
  end
end
-- A run of HGETs of one field (a batch's order records) first asks EXISTS of all its keys at
-- once: in a burst none of them exists yet, and one command answers them all (a command is
-- most of a read's cost in Redis). Any key there, and each is read.
local out = {}
local i = 1
while i <= #reads do
  local read = reads[i]
  local last = i
  if read[1] == 'HGET' then
    while last < #reads and last - i < 999 and reads[last + 1][1] == 'HGET'
        and reads[last + 1][3] == read[3] do
      last = last + 1
    end
  end
  local absent = false
  if last > i then
    local keys = {}
    for j = i, last do
      keys[j - i + 1] = KEYS[reads[j][2]]
    end
    absent = redis.call('EXISTS', unpack(keys)) == 0
  end
  if absent then
    for j = i, last do
      out[j] = false
    end
  else
    for j = i, last do
      local r = reads[j]
      if r[1] == 'POSITIONS' then
        local ok, reply = pcall(positions, KEYS[r[2]], KEYS[r[3]], KEYS[r[4]])
        out[j] = ok and reply or (type(reply) == 'table' and reply
          or redis.error_reply(tostring(reply)))
      else
        out[j] = redis.pcall(r[1], KEYS[r[2]], unpack(r, 3))
      end
    end
  end
  i = last + 1
end
return out
