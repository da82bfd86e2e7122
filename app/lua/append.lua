-- Append events to one shard of the log, atomically: check the log's epoch, position each event
-- in the firehose, store it in its topic and, when durable, in the journal (every durable event,
-- all topics, retention window). One event (`append`) or many (`append_many`: one round trip
-- for a batch); the events are positioned in the order given, so each topic keeps their order.
-- KEYS[1] firehose stream   KEYS[2] journal stream   KEYS[3] epoch key
-- KEYS[4] the firehose's newest ID (used only with several shards)
-- then for the i-th event (i from 1): KEYS[3 + 2i] its topic stream,
--   KEYS[4 + 2i] its dedupe key (used only when its dedupe flag is "1")
-- ARGV[1] retention ms   ARGV[2] firehose window ms
-- ARGV[3] the epoch the caller believes in ("<tag>.<created ms>")
-- ARGV[4] a fresh random tag, used only if Redis has no epoch (it lost its data)
-- ARGV[5] this shard's index   ARGV[6] the number of log shards (every key above is the shard's)
-- ARGV[7], ARGV[8] (several shards) ms and seq of the newest position the caller has seen: the
-- events come after it, so what one process appends in turn keeps its order across shards
-- then five per event, the i-th at ARGV[4 + 5i] ..: topic, event type, envelope body (JSON
-- without id), "1" if durable ("0": ephemeral), "1" to append at most once per its dedupe key
-- (an outbox entry, else "0")
-- Returns {"ok", position, ...}, one position ("<ms>-<seq>", shared by all streams: one global
-- order) per event, in the order given (a deduplicated event's is the first append's), or
-- {"epoch", current epoch} without appending anything when the caller's epoch is not Redis's:
-- the caller adopts the current one and tries again.
--
-- Why the epoch is checked here (docs/ARCHITECTURE.md, "When Redis loses its data"): a Redis
-- restarted without persistence has lost every stream *and* the epoch key. Checking in the
-- same script as the XADD makes the loss impossible to miss: no event can enter a log whose
-- history vanished under an epoch that still claims it. The first script to find the key
-- missing mints the new epoch (GET then SET, atomic inside the script); every other process
-- adopts it from the reply.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[4] .. '.' .. string.format('%.0f', now_ms)
  redis.call('SET', KEYS[3], epoch)
end
if epoch ~= ARGV[3] then
  return {'epoch', epoch}
end
local tag = string.match(epoch, '^[^.]*')
local window_floor = string.format('%.0f', now_ms - tonumber(ARGV[2]))
local retention_floor = string.format('%.0f', now_ms - tonumber(ARGV[1]))
local shard, count = tonumber(ARGV[5]), tonumber(ARGV[6])
-- Several shards: this shard's IDs have a sequence number congruent to its index, so no two
-- shards ever give the same position (docs/SCALING.md, "One order across shards"); the script
-- picks each ID itself, after the firehose's newest one and after what the caller has seen.
local last_ms, last_seq = -1, -1
if count > 1 then
  -- The firehose's newest ID, kept beside it (KEYS[4]): XINFO STREAM costs more than the XADD.
  local last = redis.call('GET', KEYS[4])
  if not last and redis.call('EXISTS', KEYS[1]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        last = info[i + 1]
      end
    end
  end
  if last then
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    last_ms, last_seq = tonumber(ms), tonumber(seq)
  end
  local seen_ms, seen_seq = tonumber(ARGV[7]), tonumber(ARGV[8])
  if seen_ms > last_ms or (seen_ms == last_ms and seen_seq > last_seq) then
    last_ms, last_seq = seen_ms, seen_seq
  end
end
local reply = {'ok'}
local stored = {}  -- topic streams written (each given its expiry once)
local journaled = false
local added = false
for i = 1, (#ARGV - 8) / 5 do
  local a = 8 + 5 * (i - 1)
  local topic, event_type, body, durable, dedupe = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local topic_key, dedupe_key = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local earlier = false
  if dedupe == '1' then
    earlier = redis.call('GET', dedupe_key)
  end
  if earlier then
    reply[#reply + 1] = earlier
  else
    -- One shard: Redis picks the ID ('*': max(now, last + 1)).
    local new_id = '*'
    if count > 1 then
      local ms, seq = now_ms, 0
      if last_ms > ms or (last_ms == ms and last_seq >= seq) then
        ms, seq = last_ms, last_seq + 1
      end
      seq = seq + (shard - seq) % count
      new_id = string.format('%.0f-%.0f', ms, seq)
      last_ms, last_seq = ms, seq
    end
    -- 'p' carries the epoch, so a reader tailing the firehose sees the moment it changed.
    local id = redis.call('XADD', KEYS[1], 'MINID', '~', window_floor, new_id,
      't', topic, 'y', event_type, 'e', body, 'p', tag)
    added = id
    if durable == '1' then
      -- The firehose ID is greater than any earlier one, so it is valid as this stream's next ID.
      redis.call('XADD', topic_key, 'MINID', '~', retention_floor, id, 'y', event_type, 'e', body)
      stored[topic_key] = true
      -- The journal is what background workers (notifications) resume from after a crash.
      redis.call('XADD', KEYS[2], 'MINID', '~', retention_floor, id, 't', topic, 'y', event_type, 'e', body)
      journaled = true
    end
    if dedupe == '1' then
      redis.call('SET', dedupe_key, id, 'PX', ARGV[1])
    end
    reply[#reply + 1] = id
  end
end
if count > 1 and added then
  redis.call('SET', KEYS[4], added)
end
for topic_key in pairs(stored) do
  redis.call('PEXPIRE', topic_key, ARGV[1])
end
if journaled then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return reply
