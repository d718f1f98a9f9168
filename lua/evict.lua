-- evict.lua: removes a candidate; evicting the leader makes the next candidate leader.
-- KEYS, ARGV[1..8]: see prelude.lua. ARGV[9]: the candidate.
-- Returns { "ok" | "not_candidate", term, expired, changes }.
local candidate = ARGV[9]
begin()
refresh(caller, false)
if not is_candidate(candidate) then
  return finish('not_candidate')
end
drop(candidate)
return finish('ok')
