-- Contingent lists (executor/background/lists.py, model/lists.py).
--
-- op 'mark' (the cancel step, no lease): a cancel of a list's entry cancels its list:
--   KEYS 1 the account's lists hash, 2 the lists' cancels hash, 3 the legacy lists hash
--   (one for every account, which workers before per-account lists wrote); ARGV 2 the
--   entry's client id, 3 the cancel's request id. Returns 1 if the list is live (marked),
--   0 if it is over.
-- op 'move' (no lease: the same list, in another place): a list a worker before
--   per-account lists wrote goes to its account's hash. KEYS 1 the legacy lists hash, 2
--   the account's lists hash; ARGV 2 the entry's client id, 3 the JSON read. Returns 1 if
--   moved, 0 if it changed meanwhile.
-- The watcher's writes, each a compare-and-set on the list's JSON that re-checks the
-- account's emulator lease, so one exit is published once whoever watches:
--   KEYS 1 the account's lists hash, 2 the cancels hash, 3 the account's emulator lease,
--   4 the pending stream; ARGV 2 the lease token, 3 the entry's client id, 4 the JSON read,
--   5 the new JSON, 6.. requests (the data of pending entries) to publish.
--   'write': the new JSON, and the requests (an exit's), if any: the new exit's
--   "request":"$" in the JSON becomes its pending entry's id.  'end': forget the list
--   (and its cancel mark) and publish the requests (the cancels of its open exits).
-- Returns the pending entry id of the last request published, or 1 when none was; 0 the
-- list changed meanwhile (nothing written), -2 the lease is not the caller's.
local op = ARGV[1]
if op == 'mark' then
  if not redis.call('HGET', KEYS[1], ARGV[2]) and not redis.call('HGET', KEYS[3], ARGV[2]) then
    return 0
  end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
if op == 'move' then
  if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then
    return 0
  end
  -- Never over a list already in the account's hash: that one is its watcher's.
  redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 1
end
if redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return -2
end
if redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[4] then
  return 0
end
local last = 1
for i = 6, #ARGV do
  last = redis.call('XADD', KEYS[4], '*', 'data', ARGV[i])
end
if op == 'write' then
  -- The new exit's "request" is written as "$": its entry's id is known only now.
  local new = ARGV[5]
  if last ~= 1 then
    new = string.gsub(new, '"request":"%$"', '"request":"' .. last .. '"')
  end
  redis.call('HSET', KEYS[1], ARGV[3], new)
else
  redis.call('HDEL', KEYS[1], ARGV[3])
  redis.call('HDEL', KEYS[2], ARGV[3])
end
return last
