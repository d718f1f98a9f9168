-- promote.lua: swaps a candidate with the one just ahead of it; into the first slot makes it
-- leader.
-- KEYS, ARGV[1..6]: see prelude.lua. ARGV[7]: the candidate.
-- Returns { "ok" | "not_candidate", term, expired }.
local candidate = ARGV[7]
begin()
refresh(caller, false)
if not is_candidate(candidate) then
  return finish('not_candidate')
end
split()
local at = assert(position(candidate), 'a member without a line')
if at > 1 then
  -- the line ahead ends at at - 1; find where it starts
  local from = at - 1
  while from > 1 and string.byte(list, from - 1) ~= 10 do
    from = from - 1
  end
  local ahead = string.sub(list, from, at - 2)
  list = string.sub(list, 1, from - 1) .. candidate .. '\n' .. ahead .. '\n' .. string.sub(list, at + #candidate + 1)
  changed = true
end
return finish('ok')
