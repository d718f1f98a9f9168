-- enter.lua: the caller joins the election (appended at the end), or, already a candidate,
-- just refreshes its lease.
-- KEYS, ARGV[1..5]: see prelude.lua (ARGV[4], the caller, is the candidate).
-- Returns { "ok" | "too_many", term, expired }.
begin()
if is_candidate(caller) then
  refresh(caller, false)
  return finish('ok')
end
if redis.call('ZCARD', lease_key) >= max_candidates then
  return finish('too_many')
end
split()
list = list .. caller .. '\n'
changed = true
refresh(caller, true)
return finish('ok')
