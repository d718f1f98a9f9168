-- anoint.lua: moves a candidate to the front, making it leader.
-- KEYS, ARGV[1..8]: see prelude.lua. ARGV[9]: the candidate.
-- Returns { "ok" | "not_candidate", term, expired, changes }.
local candidate = ARGV[9]
begin()
refresh(caller, false)
if not is_candidate(candidate) then
  return finish('not_candidate')
end
local i = assert(position(candidate), 'a member without a line')
if i > from then
  remove_line(i, candidate)
  front = candidate .. '\n'
  changed = true
end
return finish('ok')
