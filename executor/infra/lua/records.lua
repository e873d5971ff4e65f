-- The current record of each order key (false where there is none), in one call: cheaper
-- than a pipeline of HGETs, whose client-side cost is per command.
-- KEYS: order keys. Returns one record or false per key.
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, 'record')
end
return out
