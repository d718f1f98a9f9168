-- inspect.lua: one election as the console shows it: its term and every candidate's lease, on
-- the Redis clock. Reads only: it applies no rule (a lease that ran out shows as such until a
-- sweeper or a call removes it).
-- KEYS[1]: the bucket's sessions; KEYS[2]: the election's term; KEYS[3]: its leases (see
-- prelude.lua).
-- Returns { now in ms, term (nil: none), { candidate, lease, ... } in lease order, { candidate
-- held by its session, that session's end, ... } }.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local leases = redis.call('ZRANGE', KEYS[3], '0', '-1', 'WITHSCORES')
local held = {}
for i = 1, #leases, 2 do
  if tonumber(leases[i + 1]) >= HELD then
    held[#held + 1] = leases[i]
    held[#held + 1] = redis.call('ZSCORE', KEYS[1], leases[i]) or '0'
  end
end
return { now, redis.call('GET', KEYS[2]), leases, held }
