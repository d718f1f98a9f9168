-- promote.lua: swaps a candidate with the one just ahead of it; into the first slot makes it
-- leader.
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
  -- the line ahead ends at i - 1; find where it starts
  local ahead = i - 1
  while ahead > from and string.byte(body, ahead - 1) ~= 10 do
    ahead = ahead - 1
  end
  local line = string.sub(body, ahead, i - 2)
  at, cut, put = ahead, i + #candidate + 1 - ahead, candidate .. '\n' .. line .. '\n'
  changed = true
end
return finish('ok')
