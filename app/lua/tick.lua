-- Promise that this log shard will never give a position at or below ARGV[1]/ARGV[2] again, and
-- show it to every reader tailing the shard: unless the firehose already holds such an entry,
-- add a *tick* (an entry with no topic) at the smallest position of this shard at or after it.
-- A process reading several shards releases an event only once every shard has shown an entry
-- at or after its position (app/log/redis_tail.py, docs/SCALING.md "One order across shards").
-- KEYS[1] the shard's firehose   KEYS[2] the shard's epoch key   KEYS[3] the firehose's newest ID
-- ARGV[1] ms   ARGV[2] seq of the wanted position   ARGV[3] firehose window ms
-- ARGV[4] a fresh random tag (only if the shard has no epoch: it lost its data)
-- ARGV[5] the shard's index   ARGV[6] the number of shards
-- Returns 1 if it added a tick, 0 if the firehose was already there.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[4] .. '.' .. string.format('%.0f', now_ms)
  redis.call('SET', KEYS[2], epoch)
end
local want_ms, want_seq = tonumber(ARGV[1]), tonumber(ARGV[2])
local last = redis.call('GET', KEYS[3])
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
if last_ms > want_ms or (last_ms == want_ms and last_seq >= want_seq) then
  return 0
end
local count = tonumber(ARGV[6])
local seq = want_seq + (tonumber(ARGV[5]) - want_seq) % count
if want_ms == 0 and seq == 0 then
  return 0  -- the origin: every position comes after it anyway
end
local window_floor = string.format('%.0f', now_ms - tonumber(ARGV[3]))
local id = redis.call('XADD', KEYS[1], 'MINID', '~', window_floor, string.format('%.0f-%.0f', want_ms, seq),
  'p', string.match(epoch, '^[^.]*'))
redis.call('SET', KEYS[3], id)
return 1
