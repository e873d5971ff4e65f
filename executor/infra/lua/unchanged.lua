-- The guard in front of a speculative write (pipeline/steps/risk.py ``speculate``): a batch
-- decided on an account's risk state as this process's last write of it left it, without
-- reading it first. Returns 1 when the write meets that state still, else 0 (and the
-- script it guards writes nothing):
-- - the account's version ``v`` is the one the decision assumed: every change of the risk
--   state moves it (safety/risk/state.py), so nothing changed it but that last write;
-- - its circuit breaker is closed (or was never written): the gate lets the batch by;
-- - nobody holds the account's turn (risk_reserve.lua): a batch that lost to another
--   worker's writes goes first;
-- - no reservation and no order record exists under any of the batch's client ids: each is
--   a first request of a new id, neither a redelivery nor another request's id, so the
--   idempotency step would have let every one by.
-- KEYS: 1 the account's version, 2 its breaker hash, 3 its open reservations hash, 4 its
--   turn, then each client id's order record.
-- ARGV: 1 the expected version, then the client ids (fields of KEYS[3]).
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then
  return 0
end
local state = redis.call('HGET', KEYS[2], 'state')
if state and state ~= 'closed' then
  return 0
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
if #ARGV > 1 then
  local held = redis.call('HMGET', KEYS[3], unpack(ARGV, 2))
  for i = 1, #held do
    if held[i] then
      return 0
    end
  end
  if redis.call('EXISTS', unpack(KEYS, 5)) > 0 then
    return 0
  end
end
return 1
