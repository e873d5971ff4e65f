-- Take the send token of each order: the right to send it to the broker. One delivery of
-- one request takes it, once, for the order's whole life; every send is made by its holder
-- only (brokers/sending.py checks it at the broker's door, after any rate-limit wait). So
-- two workers can never both be sending one client id: not the one that reclaimed a
-- request, while the worker it took it from (paused by GC or SIGSTOP past the visibility
-- timeout) may still wake up and send. A delivery without the token only looks the order
-- up (steps/submit.py).
--
-- An emulated order (brokers/emulating.py) is sent once more, when it triggers: its
-- release has a token of its own ('release_sender'), taken the same way by the emulator
-- releasing it, while its record says 'triggered'.
--
-- KEYS: order keys. ARGV[i]: the token of KEYS[i] (who takes it: worker, request, nonce).
-- Returns per key: 1 the token is this caller's (taken now, or by this same delivery
-- before: its own retries); 0 held by another delivery (which may have sent the order);
-- -1 the order is no longer pending_submit (its outcome is recorded: nothing to send).
local out = {}
for i, key in ipairs(KEYS) do
  local field = nil
  if redis.call('HGET', key, 'state') == 'pending_submit' then
    field = 'sender'
  elseif redis.call('HGET', key, 'emulation') == 'triggered' then
    field = 'release_sender'
  end
  if not field then
    out[i] = -1
  elseif redis.call('HSETNX', key, field, ARGV[i]) == 1
      or redis.call('HGET', key, field) == ARGV[i] then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
