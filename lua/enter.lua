-- enter.lua: the caller joins the election (appended at the end), or, already a candidate,
-- just refreshes its lease.
-- KEYS, ARGV[1..5]: see prelude.lua (ARGV[4], the caller, is the candidate).
-- Returns { "ok" | "too_many", term, expired }.
local s = load()
local old = leader(s)
local changed = expire(s)
local status = 'ok'
if index_of(s.c, caller) == nil then
  if #s.c >= max_candidates then
    status = 'too_many'
  else
    s.c[#s.c + 1] = caller
    changed = true
  end
end
if status == 'ok' then
  refresh(caller, false)
end
return finish(s, old, changed, status)
