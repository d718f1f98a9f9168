-- enter.lua: the caller joins the election (appended at the end), or, already a candidate,
-- just refreshes its lease.
-- KEYS, ARGV[1..6]: see prelude.lua (ARGV[4], the caller, is the candidate).
-- Returns { "ok" | "too_many" | "too_big", term, expired }.
begin()
if is_candidate(caller) then
  refresh(caller, false)
  return finish('ok')
end
local max_candidates, max_bytes = limits()
if redis.call('ZCARD', lease_key) >= max_candidates then
  return finish('too_many')
end
split()
if #list + #caller + 1 > max_bytes then
  return finish('too_big')
end
list = list .. caller .. '\n'
changed = true
refresh(caller, true)
return finish('ok')
