-- Shared by the notification worker's Redis scripts (services/notification/src/idempotency.rs).
-- clock(fallback): Redis's time in ms (TIME), so that every worker judges claim deadlines by one
-- clock; fallback (the worker's clock) where TIME is not granted.
-- intact_since(epoch_key, now): since when Redis vouches that it lost no key under the prefix,
-- or -1 when it cannot (no INFO right, or keys may be evicted); starts a new epoch at now when
-- the stored one is missing or names another server run.
local function clock(fallback)
  local t = redis.pcall('TIME')
  if type(t) == 'table' and t[1] then
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return tonumber(fallback)
end
local function intact_since(epoch_key, now)
  local server = redis.pcall('INFO', 'server')
  local run = type(server) == 'string' and string.match(server, 'run_id:(%x+)')
  if not run then return -1 end
  local memory = redis.pcall('INFO', 'memory')
  if type(memory) ~= 'string' then return -1 end
  local max = string.match(memory, 'maxmemory:(%d+)')
  local policy = string.match(memory, 'maxmemory_policy:([%w-]+)')
  if not (max == '0' or policy == 'noeviction') then return -1 end
  local epoch = redis.call('GET', epoch_key)
  if epoch then
    local r, s = string.match(epoch, '^(%x+):(%d+)$')
    if r == run then return tonumber(s) end
  end
  redis.call('SET', epoch_key, run .. ':' .. string.format('%.0f', now))
  return now
end
