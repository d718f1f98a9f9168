-- anoint.lua: moves a candidate to the front, making it leader.
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
if i > 1 then
  table.remove(s.c, i)
  table.insert(s.c, 1, candidate)
  changed = true
end
return finish(s, old, changed, 'ok')
