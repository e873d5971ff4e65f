-- Store folded positions and move the cursor, if this worker still holds the projector
-- lease and nobody moved the cursor meanwhile: so every fill counts exactly once, even
-- when the lease changes hands mid-fold. In the same step, the pre-trade risk state the
-- fills move (executor/risk/fills.py): reservations shrink by their fills and go when
-- their order ends, their released totals grow, the day's realized PnL is set, the
-- accounts' versions are bumped; so quantity is always either reserved or held, never
-- both or neither.
-- Each position written joins its account's set of fields (Keys.positions_of: what the
-- account's risk checks read of the hash, infra/lua/reads.lua) and the set of fields
-- indexed; where that set and the hash differ in size (a projector from before the sets
-- wrote a position), every field of the hash is indexed anew.
-- KEYS: 1 positions hash, 2 cursor, 3 lease, 4 the fields indexed, then the risk keys the
-- operations name.
-- ARGV: 1 lease holder, 2 expected cursor ('' for none), 3 new cursor, 4 day hash TTL
-- (ms), 5 number of positions, 6 the accounts' sets' key prefix (the account follows it;
-- a set is a key of the hash's slot, named here, as its account is known only from the
-- fields), then field, position pairs, then operations of four
-- arguments each (name, index of its key in KEYS, field, value):
--   'expect': the field still holds the value (checked before anything is written)
--   'set':    set the field      'drop': delete the field
--   'count':  increment the field by an integer (deleted at 0)
--   'day':    set the field and renew the key's TTL
--   'bump':   increment the key
-- Returns 0 when the lease, the cursor or an expected value moved; else {1, then the value
-- each 'bump' left, in their order} (a worker carries its account's state over the page:
-- safety/risk/state.py ``paged``).
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 0
end
local cursor = redis.call('GET', KEYS[2]) or ''
if cursor ~= ARGV[2] then
  return 0
end
-- A run of 'set's (or of 'drop's) of one key is one HSET (one HDEL), and the 'expect's of a
-- key are one HMGET: a fold page releases a reservation per order it ends, and a command is
-- most of a call's cost in Redis. In slices of at most SLICE fields, as Lua's unpack() is
-- limited.
local SLICE = 500
local first = 7 + 2 * tonumber(ARGV[5])
local expected = {}  -- key index -> {fields, values}
for i = first, #ARGV, 4 do
  if ARGV[i] == 'expect' then
    local at = ARGV[i + 1]
    local e = expected[at]
    if not e then
      e = {{}, {}}
      expected[at] = e
    end
    table.insert(e[1], ARGV[i + 2])
    table.insert(e[2], ARGV[i + 3])
  end
end
for at, e in pairs(expected) do
  for s = 1, #e[1], SLICE do
    local last = math.min(s + SLICE - 1, #e[1])
    local stored = redis.call('HMGET', KEYS[tonumber(at)], unpack(e[1], s, last))
    for j = s, last do
      if stored[j - s + 1] ~= e[2][j] then
        return 0
      end
    end
  end
end
for s = 7, first - 1, 2 * SLICE do
  redis.call('HSET', KEYS[1], unpack(ARGV, s, math.min(s + 2 * SLICE - 1, first - 1)))
end
local function index(fields)
  local of = {}  -- account -> its fields
  for _, field in ipairs(fields) do
    local account = string.match(field, '^([^:]*):')
    if account then
      of[account] = of[account] or {}
      table.insert(of[account], field)
    end
  end
  for account, mine in pairs(of) do
    for s = 1, #mine, SLICE do
      redis.call('SADD', ARGV[6] .. account, unpack(mine, s, math.min(s + SLICE - 1, #mine)))
    end
  end
  for s = 1, #fields, SLICE do
    redis.call('SADD', KEYS[4], unpack(fields, s, math.min(s + SLICE - 1, #fields)))
  end
end
local written = {}
for i = 7, first - 1, 2 do
  table.insert(written, ARGV[i])
end
index(written)
if redis.call('SCARD', KEYS[4]) ~= redis.call('HLEN', KEYS[1]) then
  redis.call('DEL', KEYS[4])
  index(redis.call('HKEYS', KEYS[1]))
end
local bumped = {1}
local run, run_op, run_key = {}, nil, nil
local function flush()
  if run_op == 'set' then
    redis.call('HSET', run_key, unpack(run))
  elseif run_op == 'drop' then
    redis.call('HDEL', run_key, unpack(run))
  end
  run, run_op, run_key = {}, nil, nil
end
for i = first, #ARGV, 4 do
  local op, key, field, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op ~= run_op or key ~= run_key or #run >= 2 * SLICE then
    flush()
  end
  if op == 'set' then
    run_op, run_key = op, key
    table.insert(run, field)
    table.insert(run, value)
  elseif op == 'drop' then
    run_op, run_key = op, key
    table.insert(run, field)
  elseif op == 'count' then
    if redis.call('HINCRBY', key, field, value) == 0 then
      redis.call('HDEL', key, field)
    end
  elseif op == 'day' then
    redis.call('HSET', key, field, value)
    redis.call('PEXPIRE', key, ARGV[4])
  elseif op == 'bump' then
    table.insert(bumped, redis.call('INCR', key))
  end
end
flush()
redis.call('SET', KEYS[2], ARGV[3])
return bumped
