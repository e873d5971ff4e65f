-- Apply pre-trade reservations of one account decided on one snapshot, if its risk state
-- is still that snapshot's as far as the checks are concerned (compare-and-set on the
-- checks' version, on the trading states of the account and the global scope as read, and
-- on the JSON of every reservation deleted; executor/risk/state.py). Every change increments
-- both versions, so a worker that decided on an older state decides again; a trading state
-- is compared as it is, so that no order decided before a halt is reserved (and created, in
-- the same script) after it.
-- The decimal totals are computed by the caller (Lua numbers are doubles); only integer
-- counts are incremented here.
-- Where the account's turn is held (pipeline/steps/risk.py: a batch that kept losing
-- compare-and-sets to other workers takes it, so that it wins next rather than lose again
-- and again), only its holder applies; its write gives the turn back. The
-- compare-and-set, not the turn, is what makes the write correct: a turn only decides who
-- goes first.
-- KEYS: 1 checks' version, 2 open reservations hash, 3 sums hash, 4 day hash, 5 version,
--   6 trading states hash, 7 the account's turn.
-- ARGV: 1 expected checks' version, 2 day hash TTL (ms), 3 orders of the day to add,
--   4 and 5 the account's and the global scope's fields of the trading states, 6 and 7
--   their expected values ('' for absent), 8 the caller's turn token ('': it holds none;
--   '*': a release of reservations, which goes whoever holds the turn),
--   then n and n (client id, reservation JSON as read) pairs to delete,
--   then n and n (client id, reservation JSON) pairs to set,
--   then n and n (field, value) pairs of totals to set,
--   then (field, increment) pairs of order counts, to the end.
-- Returns 1 when applied, 0 when the version, a trading state or a deleted reservation
-- moved.
-- One command per kind of write, not one per reservation: a command is most of a call's
-- cost in Redis, and a batch reserves for every order it takes. In slices, as Lua's
-- unpack() is limited (a batch may hold 5,000 orders).
local SLICE = 1000
local function each_slice(first, last, call)
  for s = first, last, SLICE do
    call(s, math.min(s + SLICE - 1, last))
  end
end
local turn = redis.call('GET', KEYS[7])
if turn and turn ~= ARGV[8] and ARGV[8] ~= '*' then
  return 0
end
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then
  return 0
end
local states = redis.call('HMGET', KEYS[6], ARGV[4], ARGV[5])
if (states[1] or '') ~= ARGV[6] or (states[2] or '') ~= ARGV[7] then
  return 0
end
local i = 9
local n = tonumber(ARGV[i])
local fields = {}
for j = 1, n do
  fields[j] = ARGV[i + 2 * j - 1]
end
local moved = false
each_slice(1, n, function(s, e)
  local stored = redis.call('HMGET', KEYS[2], unpack(fields, s, e))
  for j = s, e do
    if stored[j - s + 1] ~= ARGV[i + 2 * j] then
      moved = true
    end
  end
end)
if moved then
  return 0
end
each_slice(1, n, function(s, e)
  redis.call('HDEL', KEYS[2], unpack(fields, s, e))
end)
i = i + 2 * n + 1
n = tonumber(ARGV[i])
each_slice(i + 1, i + 2 * n, function(s, e)
  redis.call('HSET', KEYS[2], unpack(ARGV, s, e))
end)
i = i + 2 * n + 1
n = tonumber(ARGV[i])
each_slice(i + 1, i + 2 * n, function(s, e)
  redis.call('HSET', KEYS[3], unpack(ARGV, s, e))
end)
i = i + 2 * n + 1
while i < #ARGV do
  if redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) == 0 then
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
  i = i + 2
end
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBY', KEYS[4], 'orders', ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
redis.call('INCR', KEYS[1])
redis.call('INCR', KEYS[5])
if turn and turn == ARGV[8] then
  redis.call('DEL', KEYS[7])
end
return 1
