"""The Lua scripts the Redis backend runs; each is one atomic step on the server.

Times are the Redis server's (`TIME`), so that processes on machines with different clocks
agree on lease expiries, sliding windows and cooldowns. Money is integer nano-dollars, so that
repeated additions never drift past a limit.
"""

from __future__ import annotations

__all__ = ["HEALTH_CLAIM", "HEALTH_SYNC", "QUOTA_FINISH", "QUOTA_READ", "QUOTA_RESERVE", "RATE_ACQUIRE"]

_NOW = "local _t = redis.call('TIME') local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)\n"

_PURGE = """
local function incr(k, f, v)
  -- Lua negation gives -0, which HINCRBY refuses as "not an integer"; and 0 changes nothing
  if v ~= 0 then redis.call('HINCRBY', k, f, v) end
end
local function purge(k, zr, eh)
  -- reservations whose lease ran out (their process died): give back the token and cost
  -- estimates; the request itself stays counted, as a failed call's does
  local gone = redis.call('ZRANGEBYSCORE', zr, '-inf', now)
  for _, rid in ipairs(gone) do
    local e = redis.call('HGET', eh, rid)
    if e then
      local tok, cost = string.match(e, '^(%d+):(%d+)$')
      incr(k, 'tokens', -tonumber(tok))
      incr(k, 'cost', -tonumber(cost))
      redis.call('HDEL', eh, rid)
    end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', zr, '-inf', now) end
end
local function counters(k)
  local v = redis.call('HMGET', k, 'requests', 'tokens', 'cost')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')
end
"""

QUOTA_RESERVE = _NOW + _PURGE + """
-- KEYS: per bucket (counters hash, reservation lease zset, reservation estimate hash)
-- ARGV: rid, est tokens, est cost (nano-USD), lease ms, then per bucket: limit requests,
--       limit tokens, limit cost (-1 = none), expire-at ms
local rid, tok, cost, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 3
local used = {}
for i = 1, n do
  local k, zr, eh = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  purge(k, zr, eh)
  local r, t, c = counters(k)
  local lr, lt, lc = tonumber(ARGV[4*i+1]), tonumber(ARGV[4*i+2]), tonumber(ARGV[4*i+3])
  if (lr >= 0 and r + 1 > lr) or (lt >= 0 and t + tok > lt) or (lc >= 0 and c + cost > lc) then
    -- every check precedes every write: a refusal adds nothing anywhere
    return {i, r, t, c}
  end
  used[i] = {r, t, c}
end
local out = {0}
for i = 1, n do
  local k, zr, eh = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local expire_at = tonumber(ARGV[4*i+4])
  incr(k, 'requests', 1)
  incr(k, 'tokens', tok)
  incr(k, 'cost', cost)
  redis.call('ZADD', zr, now + lease, rid)
  redis.call('HSET', eh, rid, tok .. ':' .. cost)
  redis.call('PEXPIREAT', k, expire_at)
  redis.call('PEXPIREAT', zr, expire_at)
  redis.call('PEXPIREAT', eh, expire_at)
  table.insert(out, used[i][1] + 1)
  table.insert(out, used[i][2] + tok)
  table.insert(out, used[i][3] + cost)
end
return out
"""

QUOTA_FINISH = _NOW + _PURGE + """
-- KEYS: per bucket as QUOTA_RESERVE; ARGV: rid, mode (settle|release), est tokens, est cost,
--       actual tokens, actual cost
local rid, mode = ARGV[1], ARGV[2]
local et, ec, at, ac = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 1, #KEYS / 3 do
  local k, zr, eh = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  if redis.call('EXISTS', k) == 1 then
    purge(k, zr, eh)
    -- held: the estimate is still in the counters; otherwise its lease expired and purge gave it back
    local held = redis.call('ZREM', zr, rid) == 1
    redis.call('HDEL', eh, rid)
    if mode == 'release' then
      incr(k, 'requests', -1)
      if held then
        incr(k, 'tokens', -et)
        incr(k, 'cost', -ec)
      end
    elseif held then
      incr(k, 'tokens', at - et)
      incr(k, 'cost', ac - ec)
    else
      incr(k, 'tokens', at)
      incr(k, 'cost', ac)
    end
  end
end
return 1
"""

QUOTA_READ = _NOW + _PURGE + """
-- KEYS: per bucket as QUOTA_RESERVE; returns requests, tokens, cost of each
local out = {}
for i = 1, #KEYS / 3 do
  local k, zr, eh = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  purge(k, zr, eh)
  local r, t, c = counters(k)
  table.insert(out, r)
  table.insert(out, t)
  table.insert(out, c)
end
return out
"""

RATE_ACQUIRE = _NOW + """
-- Sliding-window log: at most `limit` units in any `period` ms. KEYS: per limiter (log zset,
-- units-in-window counter). ARGV: member id, period ms, then per limiter: limit, amount.
-- Returns {0} when every limiter took its amount, else {wait ms, index of the bottleneck}.
local id, period = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 2
local worst, which = 0, 0
for i = 1, n do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  local limit, amount = tonumber(ARGV[2*i+1]), tonumber(ARGV[2*i+2])
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - period)
  if #old > 0 then
    local freed = 0
    for _, m in ipairs(old) do freed = freed + tonumber(string.match(m, ':(%d+)$')) end
    redis.call('DECRBY', s, freed)
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - period)
  end
  local used = tonumber(redis.call('GET', s) or '0')
  if used + amount > limit then
    -- the wait: until enough of the oldest entries leave the window
    local need, wait = used + amount - limit, period
    local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    local freed = 0
    for j = 1, #entries, 2 do
      freed = freed + tonumber(string.match(entries[j], ':(%d+)$'))
      if freed >= need then wait = tonumber(entries[j+1]) + period - now break end
    end
    if wait < 1 then wait = 1 end
    if wait > worst then worst, which = wait, i end
  end
end
if worst > 0 then return {worst, which} end
for i = 1, n do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  local amount = tonumber(ARGV[2*i+2])
  redis.call('ZADD', z, now, id .. ':' .. amount)
  redis.call('INCRBY', s, amount)
  redis.call('PEXPIRE', z, period + 1000)
  redis.call('PEXPIRE', s, period + 1000)
end
return {0}
"""

HEALTH_SYNC = _NOW + """
-- Shared outcome windows (1 s buckets) and circuits. KEYS: per model (circuit hash, window hash).
-- ARGV: window ms, min requests, open error rate, cooldown ms, then per model: successes,
-- failures, probe outcome (ok|fail|neutral|-). Returns per model: state, ms until the cooldown
-- ends, ms until the probe lease ends, reason, outcomes and failures in the window.
local win, minr, rate, cool = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 1, #KEYS / 2 do
  local c, w = KEYS[2*i-1], KEYS[2*i]
  local ok, fail, probe = tonumber(ARGV[3*i+2]), tonumber(ARGV[3*i+3]), ARGV[3*i+4]
  local h = redis.call('HMGET', c, 'state', 'open_until', 'probe_until', 'reason')
  local state, reason = h[1] or 'closed', h[4] or ''
  local open_until, probe_until = tonumber(h[2] or '0'), tonumber(h[3] or '0')
  if state == 'open' and now >= open_until then state = 'half_open' probe_until = 0 end
  if state == 'half_open' and probe == 'ok' then
    state, probe_until, reason = 'closed', 0, 'probe succeeded'
    redis.call('DEL', w)
  elseif state == 'half_open' and probe == 'fail' then
    state, open_until, probe_until, reason = 'open', now + cool, 0, 'probe failed'
  elseif state == 'half_open' and probe == 'neutral' then
    probe_until = 0
  end
  local sec = math.floor(now / 1000)
  if ok + fail > 0 and state == 'closed' then
    redis.call('HINCRBY', w, sec .. ':n', ok + fail)
    if fail > 0 then redis.call('HINCRBY', w, sec .. ':e', fail) end
    redis.call('PEXPIRE', w, win + 2000)
  end
  local n, e = 0, 0
  local cutoff = math.floor((now - win) / 1000)
  local all = redis.call('HGETALL', w)
  for j = 1, #all, 2 do
    local f = all[j]
    local s = tonumber(string.match(f, '^(%d+)'))
    if s <= cutoff then redis.call('HDEL', w, f)
    elseif string.sub(f, -1) == 'n' then n = n + tonumber(all[j+1])
    else e = e + tonumber(all[j+1]) end
  end
  if state == 'closed' and n >= minr and n > 0 and e / n >= rate then
    state, open_until, probe_until = 'open', now + cool, 0
    reason = e .. '/' .. n .. ' failed (' .. math.floor(100 * e / n + 0.5) .. '%) in the last '
      .. (win / 1000) .. 's, all routers'
  end
  redis.call('HSET', c, 'state', state, 'open_until', open_until, 'probe_until', probe_until, 'reason', reason)
  redis.call('PEXPIRE', c, win + cool + 86400000)
  table.insert(out, {state, open_until - now, probe_until - now, reason, n, e})
end
return out
"""

HEALTH_CLAIM = _NOW + """
-- The one half-open probe, across every router: KEYS: circuit hash; ARGV: lease ms.
-- Returns 1 when this caller may send the probe.
local h = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'probe_until')
local state, open_until, probe_until = h[1] or 'closed', tonumber(h[2] or '0'), tonumber(h[3] or '0')
if state == 'closed' then return 1 end
if state == 'open' then
  if now < open_until then return 0 end
  state, probe_until = 'half_open', 0
end
if now < probe_until then return 0 end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[1]))
return 1
"""
