-- Gives a claim back. KEYS: the event's key. ARGV: the owner's token. Sets the deadline to 0,
-- keeping the key's TTL, only if the claim is still the caller's.
local current = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ':'
if current and string.sub(current, 1, #mine) == mine then
  redis.call('SET', KEYS[1], mine .. '0', 'KEEPTTL')
  return 1
end
return 0
