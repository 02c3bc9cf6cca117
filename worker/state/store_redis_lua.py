"""The Redis store's atomic steps, one Lua script each (`store_redis.py` runs them).

Every key a script touches is passed in KEYS and named in each `redis.call` as a `KEYS[i]`
expression (never a copy in a Lua variable), every call has at least one key, and all of a
fleet's keys share one hash tag, so each script runs on one shard of a Tair / Redis cluster
instance (Alibaba Cloud, Tair "Lua script syntax and solutions to common errors", limits in
cluster architecture: keys only through KEYS, all in one slot, numkeys > 0). Times come from the
server's clock (`TIME`), never a worker's. Claims, budgets and reservations expire by
themselves: a worker that dies leaves nothing held for longer than it asked.
"""

NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: settled, attempts, claim per key. ARGV[1]: claim ms (0: no claims); ARGV[1+i]: owner
# ('': looked up, not claimed).
# Returns per key {settled, attempts made, resume ('' none), suspect, busy}.
TAKE = """
local hold = tonumber(ARGV[1])
local out = {}
for i = 0, #KEYS / 3 - 1 do
  if redis.call('EXISTS', KEYS[3 * i + 1]) == 1 then
    out[#out + 1] = {1, 0, '', 0, 0}
  else
    local v = redis.call('HMGET', KEYS[3 * i + 2], 'n', 'resume', 'suspect')
    local busy = 0
    if hold > 0 and ARGV[i + 2] ~= '' then
      local holder = redis.call('GET', KEYS[3 * i + 3])
      if holder and holder ~= ARGV[i + 2] then
        busy = 1
      else
        redis.call('SET', KEYS[3 * i + 3], ARGV[i + 2], 'PX', hold)
      end
    end
    out[#out + 1] = {0, tonumber(v[1]) or 0, v[2] or '', tonumber(v[3]) or 0, busy}
  end
end
return out
"""

# KEYS: settled, attempts, claim per key. ARGV[1]: dedupe ms (0: remember nothing).
# Any owner's claim ends: once a key is settled every copy of it is a duplicate.
SETTLED = """
local ttl = tonumber(ARGV[1])
for i = 0, #KEYS / 3 - 1 do
  if ttl > 0 then redis.call('SET', KEYS[3 * i + 1], '1', 'PX', ttl) end
  redis.call('DEL', KEYS[3 * i + 2], KEYS[3 * i + 3])
end
return 0
"""

# KEYS: attempts, claim. ARGV: resume ('' = all plugins), attempts ttl s, still a suspect
# (1: it crashed its quarantine process; 0: it finished), the claim's owner (UNCLAIM's
# rule: only its owner ends a claim). Returns the count.
FAILED = """
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if ARGV[1] == '' then redis.call('HDEL', KEYS[1], 'resume') else redis.call('HSET', KEYS[1], 'resume', ARGV[1]) end
redis.call('HSET', KEYS[1], 'suspect', tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return n
"""

# KEYS: attempts, claim. ARGV: resume, attempts (raise the count to it), attempts ttl s,
# the claim's owner.
DEFERRED = """
local n = math.max(tonumber(redis.call('HGET', KEYS[1], 'n')) or 0, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'n', n, 'resume', ARGV[1], 'suspect', 0)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return n
"""

# KEYS: claim per key. ARGV[i]: its owner. Ends each claim its owner still holds: a
# worker ends only its own (owners are message ids), never a copy's elsewhere.
UNCLAIM = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) end
end
return 0
"""

# KEYS: attempts, claim per key. ARGV[1]: attempts ttl s; ARGV[1+i]: 1 charged, 0 suspect only.
CRASHED = """
for i = 0, #KEYS / 2 - 1 do
  redis.call('HSET', KEYS[2 * i + 1], 'suspect', 1)
  if ARGV[i + 2] == '1' then redis.call('HINCRBY', KEYS[2 * i + 1], 'n', 1) end
  redis.call('EXPIRE', KEYS[2 * i + 1], tonumber(ARGV[1]))
  redis.call('DEL', KEYS[2 * i + 2])
end
return 0
"""

# KEYS: one sorted set per budget (member: a take's token, score: when, ms).
# ARGV[1]: token; ARGV[2i], ARGV[2i+1]: limit and window ms of KEYS[i].
# All or none. Returns {0, 0} when taken, else {i, ms until KEYS[i] has room}.
TAKE_BUDGETS = NOW + """
for i = 1, #KEYS do
  local limit, per = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - per)
  local n = redis.call('ZCARD', KEYS[i])
  if n >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], n - limit, n - limit, 'WITHSCORES')
    return {i, math.max(tonumber(oldest[2]) + per - now, 0)}
  end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 * i + 1]))
end
return {0, 0}
"""

# KEYS[1]: the group's reservations (hash holder -> expiry ms). ARGV: holder, ttl ms, keep,
# max out share (per mille), force (1/0), then the healthy members. The rule is
# `store_sqlite_shared.judge`, transcribed. Returns {granted, healthy members remaining}.
RESERVE = NOW + """
local holder, ttl, keep, share, force = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local out, nout = {}, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > now then out[all[i]] = true; nout = nout + 1 else redis.call('HDEL', KEYS[1], all[i]) end
end
local members, remaining, total = {}, 0, nout
for i = 6, #ARGV do
  local m = ARGV[i]
  if not members[m] then
    members[m] = true
    if not out[m] then total = total + 1; if m ~= holder then remaining = remaining + 1 end end
  end
end
local granted = force or out[holder] or not members[holder]
if not granted then
  granted = remaining >= keep and (nout + 1) * 1000 <= share * total
end
if granted then
  redis.call('HSET', KEYS[1], holder, now + ttl)
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  return {1, remaining}
end
return {0, remaining}
"""

# KEYS: one group's reservations per key (as RESERVE). ARGV[1]: ttl ms; then, for each
# KEYS[i] in turn, how many holders and those holders. Each is counted out, never refused
# (RESERVE with force, for a whole batch). Returns 0.
FORCE = NOW + """
local ttl, a = tonumber(ARGV[1]), 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  for j = a + 1, a + n do redis.call('HSET', KEYS[i], ARGV[j], now + ttl) end
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  a = a + n + 1
end
return 0
"""
