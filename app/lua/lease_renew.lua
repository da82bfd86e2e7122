-- Renew a lease only if this holder still has it (never take a free one: a holder that
-- stalled past its lease must learn it lost it, even if nobody holds the key right now).
-- KEYS[1] lease key
-- ARGV[1] this holder's token   ARGV[2] lease duration ms
-- Returns 1 if renewed (still ours), 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
