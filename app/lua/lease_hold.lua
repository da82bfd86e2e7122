-- Acquire or renew a worker lease: succeed if it is free or already ours.
-- KEYS[1] lease key
-- ARGV[1] this holder's token   ARGV[2] lease duration ms
-- Returns 1 if this holder now holds the lease, 0 if another one does.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
