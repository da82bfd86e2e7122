-- Give a worker lease up at shutdown, if it is still ours, so another process takes over now.
-- KEYS[1] lease key
-- ARGV[1] this holder's token
-- Returns 1 if released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
