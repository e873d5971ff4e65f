-- Persist new orders before they are sent to the broker, atomically with their events.
-- The order key doubles as the idempotency record: an order that already exists is not
-- touched, and its request id and record are returned so the caller can tell a redelivery
-- of the same request from a producer's retry under the same client id.
--
-- KEYS[1] events stream, KEYS[2] open-orders set, KEYS[2+i] order key of item i
-- ARGV[1] MessagePack array, one item per order key:
--   {client_order_id, request_id, state, seq, record, {event, ...}}
-- (one packed argument instead of thousands keeps the client's command encoding cheap)
-- Returns per item: 0 (created) or {request_id, record} of the existing order.
local items = cmsgpack.unpack(ARGV[1])
local out = {}
for i, item in ipairs(items) do
  local key = KEYS[2 + i]
  local cid = item[1]
  local existing = redis.call('HMGET', key, 'request_id', 'record')
  if existing[2] then
    out[i] = {existing[1], existing[2]}
  else
    redis.call('HSET', key, 'state', item[3], 'seq', item[4], 'request_id', item[2],
      'record', item[5])
    redis.call('SADD', KEYS[2], cid)
    for _, event in ipairs(item[6]) do
      redis.call('XADD', KEYS[1], '*', 'data', event, 'client_order_id', cid)
    end
    out[i] = 0
  end
end
return out
