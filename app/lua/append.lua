-- Append one event to the log, atomically: check the log's epoch, position the event in the
-- firehose, store it in its topic and, when durable, in the journal (every durable event, all
-- topics, retention window).
-- KEYS[1] firehose stream   KEYS[2] topic stream   KEYS[3] journal stream
-- KEYS[4] epoch key         KEYS[5] dedupe key (used only when ARGV[9] is "1")
-- KEYS[6] the firehose's newest ID (used only with several shards)
-- ARGV[1] topic   ARGV[2] event type   ARGV[3] envelope body (JSON without id)
-- ARGV[4] retention ms   ARGV[5] firehose window ms   ARGV[6] "1" if durable, "0" if ephemeral
-- ARGV[7] the epoch the caller believes in ("<tag>.<created ms>")
-- ARGV[8] a fresh random tag, used only if Redis has no epoch (it lost its data)
-- ARGV[9] "1" to append at most once per KEYS[5] (an outbox entry), else "0"
-- ARGV[10] this shard's index   ARGV[11] the number of log shards (every key above is the shard's)
-- ARGV[12], ARGV[13] (several shards) ms and seq of the newest position the caller has seen: the
-- event comes after it, so what one process appends in turn keeps its order across shards
-- Returns {"ok", position} (position "<ms>-<seq>", shared by all streams: one global order),
-- or {"epoch", current epoch} without appending when the caller's epoch is not Redis's: the
-- caller adopts the current one and tries again.
--
-- Why the epoch is checked here (docs/ARCHITECTURE.md, "When Redis loses its data"): a Redis
-- restarted without persistence has lost every stream *and* the epoch key. Checking in the
-- same script as the XADD makes the loss impossible to miss: no event can enter a log whose
-- history vanished under an epoch that still claims it. The first script to find the key
-- missing mints the new epoch (GET then SET, atomic inside the script); every other process
-- adopts it from the reply.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[8] .. '.' .. string.format('%.0f', now_ms)
  redis.call('SET', KEYS[4], epoch)
end
if epoch ~= ARGV[7] then
  return {'epoch', epoch}
end
if ARGV[9] == '1' then
  local earlier = redis.call('GET', KEYS[5])
  if earlier then
    return {'ok', earlier}
  end
end
local tag = string.match(epoch, '^[^.]*')
local window_floor = string.format('%.0f', now_ms - tonumber(ARGV[5]))
-- One shard: Redis picks the ID ('*': max(now, last + 1)). Several: this shard's IDs have a
-- sequence number congruent to its index, so no two shards ever give the same position
-- (docs/SCALING.md, "One order across shards").
local new_id = '*'
local count = tonumber(ARGV[11])
if count > 1 then
  -- The firehose's newest ID, kept beside it (KEYS[6]): XINFO STREAM costs more than the XADD.
  local last = redis.call('GET', KEYS[6])
  if not last and redis.call('EXISTS', KEYS[1]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        last = info[i + 1]
      end
    end
  end
  local last_ms, last_seq = -1, -1
  if last then
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    last_ms, last_seq = tonumber(ms), tonumber(seq)
  end
  local ms, seq = now_ms, 0
  if last_ms > ms or (last_ms == ms and last_seq >= seq) then
    ms, seq = last_ms, last_seq + 1
  end
  local seen_ms, seen_seq = tonumber(ARGV[12]), tonumber(ARGV[13])
  if seen_ms > ms or (seen_ms == ms and seen_seq >= seq) then
    ms, seq = seen_ms, seen_seq + 1
  end
  seq = seq + (tonumber(ARGV[10]) - seq) % count
  new_id = string.format('%.0f-%.0f', ms, seq)
end
-- 'p' carries the epoch, so a reader tailing the firehose sees the moment it changed.
local id = redis.call('XADD', KEYS[1], 'MINID', '~', window_floor, new_id,
  't', ARGV[1], 'y', ARGV[2], 'e', ARGV[3], 'p', tag)
if count > 1 then
  redis.call('SET', KEYS[6], id)
end
if ARGV[6] == '1' then
  local retention_floor = string.format('%.0f', now_ms - tonumber(ARGV[4]))
  -- The firehose ID is greater than any earlier one, so it is valid as this stream's next ID.
  redis.call('XADD', KEYS[2], 'MINID', '~', retention_floor, id, 'y', ARGV[2], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  -- The journal is what background workers (notifications) resume from after a crash.
  redis.call('XADD', KEYS[3], 'MINID', '~', retention_floor, id, 't', ARGV[1], 'y', ARGV[2], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
if ARGV[9] == '1' then
  redis.call('SET', KEYS[5], id, 'PX', ARGV[4])
end
return {'ok', id}
