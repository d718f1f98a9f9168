-- evict.lua: removes a candidate; evicting the leader makes the next candidate leader.
-- KEYS, ARGV[1..5]: see prelude.lua. ARGV[6]: the candidate.
-- Returns { "ok" | "not_candidate", term, expired }.
local candidate = ARGV[6]
local s = load()
local old = leader(s)
local changed = expire(s)
refresh(caller, true)
local i = index_of(s.c, candidate)
if not i then
  return finish(s, old, changed, 'not_candidate')
end
table.remove(s.c, i)
redis.call('ZREM', lease_key, candidate)
return finish(s, old, true, 'ok')
