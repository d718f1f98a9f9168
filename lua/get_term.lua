-- get_term.lua: the current term (GetTerm and Snapshot). Still drops expired candidates first,
-- so no answer shows a candidate whose lease ran out, and refreshes the caller's lease.
-- KEYS, ARGV[1..5]: see prelude.lua.
-- Returns { "ok", term, expired }.
local s = load()
local old = leader(s)
local changed = expire(s)
refresh(caller, true)
return finish(s, old, changed, 'ok')
