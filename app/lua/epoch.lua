-- The log's epoch, minted if Redis has none (new, or it lost its data): "<tag>.<created ms>".
-- KEYS[1] epoch key   ARGV[1] a fresh random tag, used only when minting
-- GET then SET inside one script: whichever process comes first mints it, all adopt it.
local epoch = redis.call('GET', KEYS[1])
if epoch then
  return epoch
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
epoch = ARGV[1] .. '.' .. string.format('%.0f', now_ms)
redis.call('SET', KEYS[1], epoch)
return epoch
