-- Give back send tokens that were taken but never used (the order was not sent: its
-- durability could not be confirmed), so a later delivery may send. Only where the token
-- is still the caller's and the order still pending_submit (or, for an emulated order's
-- release token, still 'triggered').
-- KEYS: order keys. ARGV[i]: the token of KEYS[i]. Returns how many were given back.
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'sender') == ARGV[i]
      and redis.call('HGET', key, 'state') == 'pending_submit' then
    redis.call('HDEL', key, 'sender')
    n = n + 1
  elseif redis.call('HGET', key, 'release_sender') == ARGV[i]
      and redis.call('HGET', key, 'emulation') == 'triggered' then
    redis.call('HDEL', key, 'release_sender')
    n = n + 1
  end
end
return n
