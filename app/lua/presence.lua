-- Presence and typing for one discussion, atomically (contract: app/presence.py).
-- KEYS[1] connections zset (conn id -> expiry ms)
-- KEYS[2] connections hash (conn id -> {"u": user id, "s": status, "l": 1 if lingering})
-- KEYS[3] users hash (user id -> {"n": name, "c": connections, "v": live ones, "o": live online, "s": status})
-- KEYS[4] typing zset (user id -> when the sweep must look at the entry, ms)
-- KEYS[5] typing hash (user id -> {"n": name, "t": state, "b": last broadcast ms, "l": last signal ms})
-- KEYS[6] due zset, shared by every discussion (KEYS[1]'s name -> the earliest deadline in
--         KEYS[1] or KEYS[4], ms): what a sweep must look at (`reschedule`, after every op)
-- KEYS[7..] touch only: the user index zset (discussion id -> expiry) of each connection, in order
-- ARGV[1] op: touch | leave | status | typing | stop_typing | sweep | snapshot | sweep_snapshot
-- ARGV[2] now ms, or "" for the server's clock   ARGV[3] connection ttl ms   ARGV[4] grace ms
-- ARGV[5] typing ttl ms   ARGV[6] throttle ms   ARGV[7] key ttl ms   ARGV[8] max connections
-- ARGV[9..] per op:
--   touch:       discussion id, then (conn id, user id, name, status) per connection
--   leave:       conn id, ... (one or more)
--   status:      user id, status, conn id or "" (all the user's live connections)
--   typing:      user id, name, "1" | "0"
--   stop_typing: user id
--   sweep, sweep_snapshot: batch size
-- Returns the events caused, flat: type, user id, name, status ("" for typing), ...
-- (snapshot: {{user id, name, status, ...}, {user id, name, ...}}; sweep_snapshot: the sweep's
-- events, then the snapshot's two lists, in one reply: a GET of a discussion was two calls).
-- Typing states: T typing, announced; U typing, not announced yet (throttled: the sweep
-- announces it when the window ends); S stop held back by the throttle (the sweep emits it);
-- C cooling down after a broadcast (no event when it goes).
local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ttl, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
local typing_ttl, throttle = tonumber(ARGV[5]), tonumber(ARGV[6])
local key_ttl, max_conns = tonumber(ARGV[7]), tonumber(ARGV[8])
local out = {}

local function emit(kind, uid, name, status)
  out[#out + 1] = kind
  out[#out + 1] = uid
  out[#out + 1] = name
  out[#out + 1] = status or ''
end

local function get_user(uid)
  local raw = redis.call('HGET', KEYS[3], uid)
  if raw then return cjson.decode(raw) end
  return nil
end

local function aggregate(u)
  if u.c <= 0 then return 'offline' end
  if u.v <= 0 then return u.s end -- only lingering connections: unchanged until they go
  if u.o > 0 then return 'online' end
  return 'away'
end

-- Store the user's new counts and emit what the change means for everyone else.
local function settle(uid, u, was_present)
  local status = aggregate(u)
  if u.c <= 0 then
    if was_present then emit('user_left', uid, u.n, 'offline') end
    redis.call('HDEL', KEYS[3], uid)
    return
  end
  if not was_present then
    emit('user_joined', uid, u.n, status)
  elseif status ~= u.s then
    emit('presence_changed', uid, u.n, status)
  end
  u.s = status
  redis.call('HSET', KEYS[3], uid, cjson.encode(u))
end

local function typing_get(uid)
  local raw = redis.call('HGET', KEYS[5], uid)
  if raw then return cjson.decode(raw) end
  return nil
end

local function typing_put(uid, e, due)
  redis.call('HSET', KEYS[5], uid, cjson.encode(e))
  redis.call('ZADD', KEYS[4], due, uid)
end

local function typing_del(uid)
  redis.call('HDEL', KEYS[5], uid)
  redis.call('ZREM', KEYS[4], uid)
end

-- Stopped and broadcast now: cool down for one throttle window.
local function typing_stopped(uid, e)
  emit('typing_stopped', uid, e.n)
  typing_put(uid, {n = e.n, t = 'C', b = now}, now + throttle)
end

-- A typer never announced leaves silently, keeping what is left of the last broadcast's window.
local function typing_drop_unannounced(uid, e)
  if e.b and now - e.b < throttle then
    typing_put(uid, {n = e.n, t = 'C', b = e.b}, e.b + throttle)
  else
    typing_del(uid)
  end
end

local function expire_all()
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], key_ttl) end
end

-- This discussion's next deadline (a connection's expiry or grace, a typing entry's due time)
-- in the due zset, or out of it when nothing is pending: sweeps skip discussions not due.
local function reschedule()
  local next_at = nil
  for _, key in ipairs({KEYS[1], KEYS[4]}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if next_at == nil or at < next_at then next_at = at end
    end
  end
  if next_at then
    redis.call('ZADD', KEYS[6], next_at, KEYS[1])
    redis.call('PEXPIRE', KEYS[6], key_ttl)
  else
    redis.call('ZREM', KEYS[6], KEYS[1])
  end
end

-- Who is here (user id, name, status, ...) and who is typing (user id, name, ...).
local function snapshot()
  local people, typers = {}, {}
  local users = redis.call('HGETALL', KEYS[3])
  for i = 1, #users, 2 do
    local u = cjson.decode(users[i + 1])
    if u.c > 0 then
      people[#people + 1] = users[i]
      people[#people + 1] = u.n
      people[#people + 1] = aggregate(u)
    end
  end
  local entries = redis.call('HGETALL', KEYS[5])
  for i = 1, #entries, 2 do
    local e = cjson.decode(entries[i + 1])
    local due = tonumber(redis.call('ZSCORE', KEYS[4], entries[i]) or '0')
    if e.t == 'T' and due > now then
      typers[#typers + 1] = entries[i]
      typers[#typers + 1] = e.n
    end
  end
  return {people, typers}
end

-- Expired connections and typing entries go, with the events that tells (at most `batch` each).
local function sweep(batch)
  local touched, order = {}, {}
  for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)) do
    local raw = redis.call('HGET', KEYS[2], conn)
    redis.call('ZREM', KEYS[1], conn)
    redis.call('HDEL', KEYS[2], conn)
    if raw then
      local info = cjson.decode(raw)
      local u = touched[info.u]
      if u == nil then
        u = get_user(info.u) or false
        touched[info.u] = u
        order[#order + 1] = info.u
      end
      if u then
        u.c = u.c - 1
        if info.l == 0 then
          u.v = u.v - 1
          if info.s == 'online' then u.o = u.o - 1 end
        end
      end
    end
  end
  for _, uid in ipairs(order) do
    if touched[uid] then settle(uid, touched[uid], true) end
  end
  for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, batch)) do
    local e = typing_get(uid)
    if not e then
      redis.call('ZREM', KEYS[4], uid)
    elseif e.t == 'T' or e.t == 'S' then
      typing_stopped(uid, e)
    elseif e.t == 'U' and now < e.l + typing_ttl then
      emit('typing_started', uid, e.n)
      typing_put(uid, {n = e.n, t = 'T', b = now}, e.l + typing_ttl)
    else
      typing_del(uid)
    end
  end
end

if op == 'snapshot' then
  return snapshot()
end

if op == 'sweep' or op == 'sweep_snapshot' then
  sweep(tonumber(ARGV[9]))
  reschedule()
  if #out > 0 then expire_all() end
  if op == 'sweep_snapshot' then
    local here = snapshot()
    return {out, here[1], here[2]}
  end
  return out
end

if op == 'touch' then
  local did = ARGV[9]
  local k = 7
  for i = 10, #ARGV, 4 do
    local conn, uid, name, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local raw = redis.call('HGET', KEYS[2], conn)
    if raw then
      -- A lingering connection has closed: only its grace may run out, never be renewed.
      if cjson.decode(raw).l == 0 then redis.call('ZADD', KEYS[1], now + ttl, conn) end
    elseif redis.call('ZCARD', KEYS[1]) < max_conns then
      local u = get_user(uid)
      local was_present = u ~= nil
      if not u then u = {n = name, c = 0, v = 0, o = 0, s = status} end
      u.n, u.c, u.v = name, u.c + 1, u.v + 1
      if status == 'online' then u.o = u.o + 1 end
      redis.call('ZADD', KEYS[1], now + ttl, conn)
      redis.call('HSET', KEYS[2], conn, cjson.encode({u = uid, s = status, l = 0}))
      settle(uid, u, was_present)
    end
    redis.call('ZADD', KEYS[k], now + ttl + grace, did)
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    redis.call('PEXPIRE', KEYS[k], ttl + grace)
    k = k + 1
  end
elseif op == 'leave' then
  for i = 9, #ARGV do
    local conn = ARGV[i]
    local raw = redis.call('HGET', KEYS[2], conn)
    if raw then
      local info = cjson.decode(raw)
      local u = get_user(info.u)
      if info.l == 1 then
        -- already lingering: nothing more to do
      elseif not u then
        redis.call('ZREM', KEYS[1], conn)
        redis.call('HDEL', KEYS[2], conn)
      else
        u.v = u.v - 1
        if info.s == 'online' then u.o = u.o - 1 end
        if u.v > 0 then
          u.c = u.c - 1
          redis.call('ZREM', KEYS[1], conn)
          redis.call('HDEL', KEYS[2], conn)
        else
          -- The user's last live connection: linger, so a reload within the grace does not flap.
          info.l = 1
          redis.call('HSET', KEYS[2], conn, cjson.encode(info))
          redis.call('ZADD', KEYS[1], now + grace, conn)
        end
        settle(info.u, u, true)
      end
    end
  end
elseif op == 'status' then
  local uid, status, only = ARGV[9], ARGV[10], ARGV[11]
  local u = get_user(uid)
  if u then
    local conns = {}
    if only ~= '' then
      conns[1] = only
    else
      -- O(connections in the discussion); a per-user status change is rare (page hidden/shown).
      local all = redis.call('HGETALL', KEYS[2])
      for i = 1, #all, 2 do
        if cjson.decode(all[i + 1]).u == uid then conns[#conns + 1] = all[i] end
      end
    end
    for _, conn in ipairs(conns) do
      local raw = redis.call('HGET', KEYS[2], conn)
      if raw then
        local info = cjson.decode(raw)
        if info.u == uid and info.l == 0 and info.s ~= status then
          if status == 'online' then u.o = u.o + 1 else u.o = u.o - 1 end
          info.s = status
          redis.call('HSET', KEYS[2], conn, cjson.encode(info))
        end
      end
    end
    settle(uid, u, true)
  end
elseif op == 'typing' then
  local uid, name, on = ARGV[9], ARGV[10], ARGV[11] == '1'
  local e = typing_get(uid)
  local state = e and e.t or nil
  if on then
    if state == 'T' or state == 'S' then
      typing_put(uid, {n = name, t = 'T', b = e.b}, now + typing_ttl)
    elseif not e or now - e.b >= throttle then
      emit('typing_started', uid, name)
      typing_put(uid, {n = name, t = 'T', b = now}, now + typing_ttl)
    else
      -- Inside the window of the last broadcast: the sweep announces it when the window ends.
      typing_put(uid, {n = name, t = 'U', b = e.b, l = now}, e.b + throttle)
    end
  elseif state == 'T' then
    if now - e.b >= throttle then
      typing_stopped(uid, e)
    else
      typing_put(uid, {n = e.n, t = 'S', b = e.b}, e.b + throttle)
    end
  elseif state == 'U' then
    typing_drop_unannounced(uid, e)
  end
elseif op == 'stop_typing' then
  local uid = ARGV[9]
  local e = typing_get(uid)
  if e and (e.t == 'T' or e.t == 'S') then
    typing_stopped(uid, e)
  elseif e and e.t == 'U' then
    typing_drop_unannounced(uid, e)
  end
end
reschedule()
expire_all()
return out
