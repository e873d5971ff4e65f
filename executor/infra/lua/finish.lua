-- Write the outcome of a batch of requests: each order's new record and events, its result
-- entry and the XACK of its request, all in one atomic step, so a crash leaves either the
-- whole outcome or none of it (and then the request is still pending and will be redone).
-- An acked request is also deleted from the stream (XDEL): answered, it is needed no more,
-- and kept it would hold its memory for ever. Only acked ones: an entry still pending (in
-- flight elsewhere) or never read is never deleted here.
--
-- An order write is a compare-and-set on the order's seq: if another writer moved the order
-- since we read it, the item is skipped (not acked, no result) and reported back. With the
-- record goes its place in its account's attention index (when the tracker must next look
-- at it, executor/attention.py): a final order leaves the index and the open set.
-- A request no longer pending was answered by another worker (one that took it over while
-- this one stalled past the visibility timeout): its item is skipped too, so a request
-- never gets a second result, whatever the two workers decided.
--
-- The results cap (XADD MAXLEN ~) applies only while the result stream has no registered
-- reader: a cap would drop results a reader (the SQL archive) has not read yet. With
-- readers, retention enforces the cap behind them (trim_results.lua). Checked here, in the
-- script that adds, so a reader registering cannot race it; one HLEN per stream per call.
--
-- KEYS[1] events, KEYS[2] open set, KEYS[3] completed, KEYS[4] failed, KEYS[5] pending,
-- KEYS[6] completed readers, KEYS[7] failed readers, then per item that has an order
-- change, in order: its order key, its account's attention index.
-- ARGV[1] group, ARGV[2] results maxlen (approximate), ARGV[3] ttl ms of a finished order,
-- ARGV[4] MessagePack array, 11 values per item: request_id, client_order_id, result stream
--   (1 completed, 2 failed; 3 / 4: the same, for a request answered late, acked before: no
--   pending check and no XACK, the order's compare-and-set makes it once; 5: no result now,
--   the request acked all the same: an algorithm's parent, answered when it ends), has an
--   order change (1/0), then for an order change (else
--   placeholders): expected seq, seq, state, terminal (1/0), number n of events
--   entries (0 or 1, as in begin.lua), when it is due (epoch ms; unused when terminal);
--   then the number r of extra fields of its result entry (a dead letter's raw:<field>,
--   else 0)
-- ARGV[5..] per item: its result ('' for an order change with no result of its own: each
--   order of a cancel_all), its r extra (field, value) pairs, then for an order change its
--   record and its n events entries
-- (the short values packed in one argument keep the client's command encoding cheap; the
-- JSON stays plain arguments, which Lua reads as they are instead of unpacking copies)
-- An expected seq of -1: a fresh order, which begin.lua created in this same script
-- (compose_door) and left out of the open set and the index, its record (and request id,
-- and the send token the door took, ARGV.senders: record key -> token) to this write: no
-- compare-and-set (nothing else can have moved it) and no pending check (the composer
-- checked), and it joins the open set and the index only if it is still open.
-- Returns the request ids skipped: a seq conflict, or already answered.
local group, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3]
local meta = cmsgpack.unpack(ARGV[4])
local conflicts, acked, none = {}, {}, {}
local k, a = 8, 5
local read = {}  -- per result stream (1 completed, 2 failed): has it a registered reader?
local function has_readers(target)
  if read[target] == nil then
    read[target] = redis.call('HLEN', KEYS[5 + target]) > 0
  end
  return read[target]
end
for m = 1, #meta, 11 do
  local rid, cid, target = meta[m], meta[m + 1], meta[m + 2]
  local late, deferred = target == 3 or target == 4, target == 5
  if late then
    target = target - 2
  end
  local result, extra = ARGV[a], none
  if meta[m + 10] > 0 then
    extra = {unpack(ARGV, a + 1, a + 2 * meta[m + 10])}
  end
  a = a + 1 + 2 * meta[m + 10]
  local ok = true
  local fresh = meta[m + 3] == 1 and meta[m + 4] == -1
  if (result ~= '' or deferred) and not late and not fresh
      and #redis.call('XPENDING', KEYS[5], group, rid, rid, 1) == 0 then
    ok = false
    conflicts[#conflicts + 1] = rid
  end
  if ok and meta[m + 3] == 1 then
    local key, n = KEYS[k], meta[m + 8]
    if not fresh and redis.call('HGET', key, 'seq') ~= tostring(meta[m + 4]) then
      ok = false
      conflicts[#conflicts + 1] = rid
    else
      -- A fresh record may be left to this write whole (begin.lua's 'record' mode), with
      -- the send token the door took on it (compose_door).
      local whole = none
      if fresh then
        local sender = ARGV.senders and ARGV.senders[key]
        whole = sender and {'request_id', rid, 'sender', sender} or {'request_id', rid}
      end
      redis.call('HSET', key, 'state', meta[m + 6], 'seq', meta[m + 5], 'record', ARGV[a],
        unpack(whole))
      for e = a + 1, a + n do
        redis.call('XADD', KEYS[1], '*', 'data', ARGV[e], 'client_order_id', cid)
      end
      if meta[m + 7] == 1 then
        redis.call('PEXPIRE', key, ttl)
        if not fresh then
          redis.call('SREM', KEYS[2], cid)
          redis.call('ZREM', KEYS[k + 1], cid)
        end
      else
        if fresh then
          redis.call('SADD', KEYS[2], cid)
        end
        redis.call('ZADD', KEYS[k + 1], meta[m + 9], cid)
      end
    end
  end
  if meta[m + 3] == 1 then
    k = k + 2
    a = a + 1 + meta[m + 8]
  end
  if ok and result ~= '' then
    if has_readers(target) then
      redis.call('XADD', KEYS[2 + target], '*', 'data', result,
        'request_id', rid, 'client_order_id', cid, unpack(extra))
    else
      redis.call('XADD', KEYS[2 + target], 'MAXLEN', '~', maxlen, '*', 'data', result,
        'request_id', rid, 'client_order_id', cid, unpack(extra))
    end
    if not late then
      acked[#acked + 1] = rid
    end
  elseif ok and deferred then
    acked[#acked + 1] = rid
  end
end
-- One XACK and one XDEL for the batch (a batch is far below Lua's limit on unpacked
-- arguments).
if #acked > 0 then
  redis.call('XACK', KEYS[5], group, unpack(acked))
  redis.call('XDEL', KEYS[5], unpack(acked))
end
return conflicts
