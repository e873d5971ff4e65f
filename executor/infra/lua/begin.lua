-- Persist new orders before they are sent to the broker, atomically with their events.
-- The order key doubles as the idempotency record: an order that already exists is not
-- touched, and its request id and record are returned so the caller can tell a redelivery
-- of the same request from a producer's retry under the same client id.
-- A new order also joins the open set and its account's attention index (client id -> when
-- the tracker must look at it, executor/attention.py), with its record.
--
-- The entry of a contingent list (take_profit / stop_loss) joins its account's lists hash,
-- and the parent of an execution algorithm its account's algos hash, so its exits, or its
-- children, are placed (executor/background/lists.py, algos.py) whatever happens to this
-- worker next.
--
-- KEYS[1] events stream, KEYS[2] open-orders set, then per item i: KEYS[3i] its order key,
-- KEYS[3i + 1] its account's attention index, KEYS[3i + 2] the hash it joins (its
-- account's lists or algos; any key when it joins none)
-- ARGV[1] MessagePack array, 7 values per item: client_order_id, request_id, state, seq,
--   number n of events entries (0 or 1: a write's events go in one entry, a JSON array
--   when several, producer/contract.encode_events), when it is due (epoch ms), the JSON
--   it joins that hash with (else '')
-- ARGV[2..] per item: its record, then its n events entries
-- (the short values packed in one argument keep the client's command encoding cheap; the
-- JSON stays plain arguments, which Lua reads as they are instead of unpacking copies)
-- Returns per item: 0 (created) or {request_id, record} of the existing order.
--
-- Composed with the writes of the orders' outcomes (infra/store.py compose_door), it runs
-- in two halves, told by the field ARGV.mode (absent from a script's own ARGV): 'record'
-- creates the records alone, and 'rest' (with ARGV.created, the first half's answer) makes
-- the rest of what it created: the open set, the index, the hash, the events. Where the
-- outcomes follow, they make that rest themselves (finish.lua's fresh items), with the
-- events of both writes in one entry. With ARGV.deferred too (the composer's: every order
-- is to be created pending_submit, and goes to the door, which reads none of these records
-- back), 'record' does not write the records yet either: the outcomes' write makes each
-- whole, or 'rest' does. A lean call (compose_door's, made again with the records should
-- anything need them) carries no records at all: 'record' mode with ARGV.deferred reads
-- none, and nothing else may run.
-- Two items of one client id then meet before either is written: the second is answered
-- as the first would be found. The door puts the send tokens it took on those records in
-- ARGV.senders (record key -> token), which 'rest' writes with them.
local meta = cmsgpack.unpack(ARGV[1])
local mode, created, deferred = ARGV.mode, ARGV.created, ARGV.deferred
local out, seen = {}, {}
local function write(key, m, record, ...)
  redis.call('HSET', key, 'state', meta[m + 2], 'seq', meta[m + 3],
    'request_id', meta[m + 1], 'record', record, ...)
end
local count = (#KEYS - 2) / 3
-- In a burst none of a batch's records exists yet: one EXISTS of them all answers that
-- (a command is most of a call's cost in Redis); any there, and each is read.
local absent = false
if mode ~= 'rest' and count > 1 then
  absent = true
  for s = 1, count, 1000 do
    local keys = {}
    for i = s, math.min(s + 999, count) do
      keys[#keys + 1] = KEYS[3 * i]
    end
    absent = absent and redis.call('EXISTS', unpack(keys)) == 0
  end
end
local none = {false, false}
local a = 2
for i = 1, count do
  local m = 7 * i - 6
  local key, cid, n = KEYS[3 * i], meta[m], meta[m + 4]
  local new = false
  if mode == 'rest' then
    new = created[i] == 0
    if new and deferred then
      local sender = ARGV.senders and ARGV.senders[key]
      if sender then
        write(key, m, ARGV[a], 'sender', sender)
      else
        write(key, m, ARGV[a])
      end
    end
  else
    local existing = seen[key] or (absent and none)
      or redis.call('HMGET', key, 'request_id', 'record')
    if existing[2] then
      out[i] = {existing[1], existing[2]}
    else
      -- Met by a later item of its client id, as the record would be ('': a lean call,
      -- which carries no records and is made again with them, compose_door).
      seen[key] = {meta[m + 1], ARGV[a] or ''}
      if not deferred then
        write(key, m, ARGV[a])
      end
      out[i] = 0
      new = mode ~= 'record'
    end
  end
  if new then
    redis.call('SADD', KEYS[2], cid)
    redis.call('ZADD', KEYS[3 * i + 1], meta[m + 5], cid)
    if meta[m + 6] ~= '' then
      redis.call('HSET', KEYS[3 * i + 2], cid, meta[m + 6])
    end
    for e = a + 1, a + n do
      redis.call('XADD', KEYS[1], '*', 'data', ARGV[e], 'client_order_id', cid)
    end
  end
  a = a + 1 + n
end
return out
