-- Accept a batch of new orders at the paper exchange, refusing client ids it already has.
--
-- KEYS: 1 orders (hash cid -> record), 2 received (stream), 3 book (set of open cids),
--       4 expiry (zset cid by expire_at), 5 duplicates (stream), 6.. watch zsets (cid by
--       level in ticks)
-- ARGV: 1 the orders, a msgpack array of strings: cid 1, record 1, cid 2, record 2, ...
--       (one argument, not two per order: redis-py packs each argument in Python, and
--       that was a tenth of a submit's cost); then 4 per open order: its position in the
--       batch (1..n), its watch key's index into KEYS, its level in ticks, its expire_at
--       ("": none)
-- Returns one integer per order: 1 accepted, 0 duplicate client id. A record equal to the
-- one already stored is this same call replayed (redis-py resends a command whose reply was
-- lost; every record names the submit call that made it) and answers 1 again, without a
-- second order or a second "received" entry. A real duplicate is refused and appended to
-- "duplicates": a correct worker never sends one, so tests count them from outside.
local orders, received, book, expiry, duplicates = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local items = cmsgpack.unpack(ARGV[1])
local out, new = {}, {}
for k = 1, #items / 2 do
  local cid, record = items[2 * k - 1], items[2 * k]
  if redis.call('HSETNX', orders, cid, record) == 1 then
    redis.call('XADD', received, '*', 'client_order_id', cid)
    out[k], new[k] = 1, true
  elseif redis.call('HGET', orders, cid) == record then
    out[k] = 1
  else
    redis.call('XADD', duplicates, '*', 'client_order_id', cid)
    out[k] = 0
  end
end
for i = 2, #ARGV, 4 do
  local k = tonumber(ARGV[i])
  if new[k] then  -- accepted just now (not a duplicate, not a replay)
    local cid = items[2 * k - 1]
    redis.call('SADD', book, cid)
    redis.call('ZADD', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], cid)
    if ARGV[i + 3] ~= '' then
      redis.call('ZADD', expiry, ARGV[i + 3], cid)
    end
  end
end
return out
