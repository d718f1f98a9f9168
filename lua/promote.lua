-- promote.lua: swaps a candidate with the one just ahead of it; into the first slot makes it
-- leader.
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
  s.c[i], s.c[i - 1] = s.c[i - 1], s.c[i]
  changed = true
end
return finish(s, old, changed, 'ok')
