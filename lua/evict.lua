-- evict.lua: removes a candidate; evicting the leader makes the next candidate leader.
-- KEYS, ARGV[1..7]: see prelude.lua. ARGV[8]: the candidate.
-- Returns { "ok" | "not_candidate", term, expired }.
local candidate = ARGV[8]
begin()
refresh(caller, false)
if not is_candidate(candidate) then
  return finish('not_candidate')
end
drop(candidate)
return finish('ok')
