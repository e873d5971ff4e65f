-- Accept a batch of new orders at the paper exchange, refusing client ids it already has.
--
-- KEYS: 1 orders (hash cid -> record), 2 received (stream), 3 book (set of open cids),
--       4 expiry (zset cid by expire_at), 5 duplicates (stream), 6 finished (zset cid by
--       when it ended), 7.. watch zsets (cid by level in ticks)
-- ARGV: 1 the orders, a msgpack array, 6 values per order: cid, record, ended at, its
--       worker's order record's index into KEYS (0: none), the send token to take on it,
--       how it is stored (one argument, not six per order: redis-py packs each argument
--       in Python, and that was a tenth of a submit's cost); "ended at" is the epoch ms of
--       an order final at once (filled, expired, rejected), 0 for an open one; "how": 0 a
--       new client id, -1 only if the order before it in the batch was taken just now (a
--       native exit placed with its entry's fill, lists.py), V > 0 over the ended native
--       exit stored at version V (the workers' exit placed under its id, replacing it); a
--       record "" takes the send token only, storing nothing (a native exit adopted under
--       it); then 4 per open order: its position in the batch (1..n), its watch key's
--       index into KEYS, its level in ticks, its expire_at ("": none)
-- With an order record, the worker's send token (executor/infra/lua/send.lua) is taken at
-- the exchange's door, in the same step as the exchange takes the order: the order is
-- taken only if the token is the caller's (taken now, or already its own), so a worker
-- that dies before this call leaves no token it never used, and one whose call ran sent.
-- Returns one integer per order: 1 accepted, 0 duplicate client id, -1 not sent: the
-- worker's order is no longer pending_submit, -2 not sent: another delivery holds its send
-- token. A record equal to the
-- one already stored is this same call replayed (redis-py resends a command whose reply was
-- lost; every record names the submit call that made it) and answers 1 again, without a
-- second order or a second "received" entry. A real duplicate is refused and appended to
-- "duplicates": a correct worker never sends one, so tests count them from outside.
-- An order final at once joins "finished", from which trim.lua forgets it after the
-- account's retention_ms.
-- ARGV.fresh (a field no caller's ARGV has: set by infra/store.py compose_door, which runs
-- this script right after creating every guarded worker record, pending_submit): the
-- guard takes the token without reading the state back. ARGV.senders (compose_door too,
-- where those records are written after this script, by the same script): the token is
-- not written to the record but put in that table, record key -> token, and written with
-- the record.
-- ARGV.probe (compose_door's lean call, which carries no record of the worker's own to
-- write should an order not be taken): write nothing, and answer true only if this call
-- would take every order (1 each): with ARGV.fresh, each a plain order (how 0, a record)
-- under a client id the exchange does not hold, none twice; else false. It leaves the
-- orders unpacked in ARGV.items, for the call with the same ARGV that follows.
local orders, received, book, expiry, duplicates = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local finished = KEYS[6]
local items = ARGV.items or cmsgpack.unpack(ARGV[1])
local fresh, senders = ARGV.fresh, ARGV.senders
if ARGV.probe then
  ARGV.items = items
  if not fresh then
    return false
  end
  local cids, twice = {}, {}
  for k = 1, #items / 6 do
    local cid = items[6 * k - 5]
    if items[6 * k - 4] == '' or items[6 * k] ~= 0 or twice[cid] then
      return false
    end
    twice[cid] = true
    cids[k] = cid
  end
  for s = 1, #cids, 1000 do
    local held = redis.call('HMGET', orders, unpack(cids, s, math.min(s + 999, #cids)))
    for i = 1, #held do
      if held[i] then
        return false
      end
    end
  end
  return true
end
local out, new = {}, {}
-- The orders final at once join "finished" in one ZADD (a command is most of a call's cost
-- in Redis); written before anything else touches "finished", so the order of writes holds.
local ends = {}
local function flush_ends()
  for s = 1, #ends, 1000 do
    redis.call('ZADD', finished, unpack(ends, s, math.min(s + 999, #ends)))
  end
  ends = {}
end
local function token_taken(key, token)
  if senders then
    senders[key] = token
    return true
  end
  return redis.call('HSETNX', key, 'sender', token) == 1
    or redis.call('HGET', key, 'sender') == token
end
local function taken(k, cid, ended)
  redis.call('XADD', received, '*', 'client_order_id', cid)
  out[k], new[k] = 1, true
  if ended ~= 0 then
    table.insert(ends, ended)
    table.insert(ends, cid)
  end
end
for k = 1, #items / 6 do
  local cid, record, ended = items[6 * k - 5], items[6 * k - 4], items[6 * k - 3]
  local guard, token, how = items[6 * k - 2], items[6 * k - 1], items[6 * k]
  if guard ~= 0 and not fresh
      and redis.call('HGET', KEYS[guard], 'state') ~= 'pending_submit' then
    out[k] = -1
  elseif guard ~= 0 and not token_taken(KEYS[guard], token) then
    out[k] = -2
  elseif record == '' then
    out[k] = 1
  elseif how == -1 and not new[k - 1] then
    out[k] = 0  -- its entry was not taken now (a duplicate, or this call replayed)
  elseif how > 0 and redis.call('HGET', orders, cid) ~= record
      and string.match(redis.call('HGET', orders, cid) or '{"version":0', '^{"version":(%d+)')
        == tostring(how) then
    redis.call('HSET', orders, cid, record)
    flush_ends()
    redis.call('ZREM', finished, cid)
    taken(k, cid, ended)
  elseif redis.call('HSETNX', orders, cid, record) == 1 then
    taken(k, cid, ended)
  elseif redis.call('HGET', orders, cid) == record then
    out[k] = 1
  else
    redis.call('XADD', duplicates, '*', 'client_order_id', cid)
    out[k] = 0
  end
end
flush_ends()
for i = 2, #ARGV, 4 do
  local k = tonumber(ARGV[i])
  if new[k] then  -- accepted just now (not a duplicate, not a replay)
    local cid = items[6 * k - 5]
    redis.call('SADD', book, cid)
    redis.call('ZADD', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], cid)
    if ARGV[i + 3] ~= '' then
      redis.call('ZADD', expiry, ARGV[i + 3], cid)
    end
  end
end
return out
