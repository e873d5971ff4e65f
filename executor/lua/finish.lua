-- Write the outcome of a batch of requests: each order's new record and events, its result
-- entry and the XACK of its request, all in one atomic step, so a crash leaves either the
-- whole outcome or none of it (and then the request is still pending and will be redone).
--
-- An order write is a compare-and-set on the order's seq: if another writer moved the order
-- since we read it, the item is skipped (not acked, no result) and reported back.
--
-- KEYS[1] events, KEYS[2] open set, KEYS[3] completed, KEYS[4] failed, KEYS[5] pending,
-- KEYS[5+j] order keys, in the order of the items that have one.
-- ARGV[1] group, ARGV[2] results maxlen (approximate), ARGV[3] ttl ms of a finished order,
-- ARGV[4] MessagePack array of items:
--   {request_id, client_order_id, result stream (1 completed, 2 failed), result,
--    order} where result is '' for an order change with no result of its own (each order
--   of a cancel_all) and order is false or {expected seq, seq, state, record, terminal,
--   {event, ...}}.
-- Returns the request ids skipped because of a seq conflict.
local group, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3]
local items = cmsgpack.unpack(ARGV[4])
local conflicts, acked = {}, {}
local k = 6
for _, item in ipairs(items) do
  local rid, cid, target, result, order = item[1], item[2], item[3], item[4], item[5]
  local ok = true
  if order then
    local key = KEYS[k]
    k = k + 1
    if redis.call('HGET', key, 'seq') ~= tostring(order[1]) then
      ok = false
      conflicts[#conflicts + 1] = rid
    else
      redis.call('HSET', key, 'state', order[3], 'seq', order[2], 'record', order[4])
      for _, event in ipairs(order[6]) do
        redis.call('XADD', KEYS[1], '*', 'data', event, 'client_order_id', cid)
      end
      if order[5] then
        redis.call('PEXPIRE', key, ttl)
        redis.call('SREM', KEYS[2], cid)
      end
    end
  end
  if ok and result ~= '' then
    redis.call('XADD', KEYS[2 + target], 'MAXLEN', '~', maxlen, '*', 'data', result,
      'request_id', rid, 'client_order_id', cid)
    acked[#acked + 1] = rid
  end
end
-- One XACK for the batch (a batch is far below Lua's limit on unpacked arguments).
if #acked > 0 then
  redis.call('XACK', KEYS[5], group, unpack(acked))
end
return conflicts
