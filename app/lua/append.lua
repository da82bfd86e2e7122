-- Append one event to the log, atomically: position it in the firehose, store it in its topic
-- and, when durable, in the journal (every durable event, all topics, retention window).
-- KEYS[1] firehose stream      KEYS[2] topic stream      KEYS[3] journal stream
-- ARGV[1] topic   ARGV[2] event type   ARGV[3] envelope body (JSON without id)
-- ARGV[4] retention ms   ARGV[5] firehose window ms   ARGV[6] "1" if durable, "0" if ephemeral
-- Returns the position ("<ms>-<seq>"), shared by all streams: one global order for all topics.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window_floor = string.format('%.0f', now_ms - tonumber(ARGV[5]))
local id = redis.call('XADD', KEYS[1], 'MINID', '~', window_floor, '*',
  't', ARGV[1], 'y', ARGV[2], 'e', ARGV[3])
if ARGV[6] == '1' then
  local retention_floor = string.format('%.0f', now_ms - tonumber(ARGV[4]))
  -- The firehose ID is greater than any earlier one, so it is valid as this stream's next ID.
  redis.call('XADD', KEYS[2], 'MINID', '~', retention_floor, id, 'y', ARGV[2], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  -- The journal is what background workers (notifications) resume from after a crash.
  redis.call('XADD', KEYS[3], 'MINID', '~', retention_floor, id, 't', ARGV[1], 'y', ARGV[2], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return id
