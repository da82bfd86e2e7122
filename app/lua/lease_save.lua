-- Save a worker's checkpoint, only while it still holds the lease (a holder that stalled
-- past its lease must not move the checkpoint of the one that replaced it).
-- KEYS[1] lease key   KEYS[2] checkpoint key
-- ARGV[1] this holder's token   ARGV[2] checkpoint (cursor)   ARGV[3] checkpoint expiry ms
-- Returns 1 if saved, 0 if the lease is held by another (or by nobody).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
