-- The claim (after epoch.lua). KEYS: the event's key, the epoch key. ARGV: token, the worker's
-- clock (ms), lease (ms), keep (ms). Returns {state, intact_since, now} with state done, busy (a
-- live claim), fresh (no key: claimed) or retaken (an expired or released claim: claimed).
local now = clock(ARGV[2])
local since = intact_since(KEYS[2], now)
local current = redis.call('GET', KEYS[1])
if current == 'done' then return {'done', since, now} end
if current then
  -- A value without a deadline is a claim of an older version: live until its own TTL.
  local deadline = tonumber(string.match(current, ':(%d+)$'))
  if not deadline or deadline > now then return {'busy', since, now} end
end
local deadline = string.format('%.0f', now + tonumber(ARGV[3]))
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. deadline, 'PX', ARGV[4])
if current then return {'retaken', since, now} end
return {'fresh', since, now}
