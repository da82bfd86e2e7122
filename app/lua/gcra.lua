-- One action under a GCRA rate limit (generic cell rate algorithm; a sliding limit with no
-- window edge to straddle). The key holds the "theoretical arrival time" (TAT, ms): when the
-- limit would be back to full. It expires when it no longer matters.
-- KEYS[1] the limited key
-- ARGV[1] emission interval ms (period / count)   ARGV[2] period ms (the burst tolerance)
-- Returns 0 when the action is allowed (and counted), else the ms until one would be.
-- Time is Redis's own, so servers with skewed clocks share one limit exactly.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + interval
local wait = new_tat - period - now
if wait > 0 then
  return math.ceil(wait)
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now))
return 0
