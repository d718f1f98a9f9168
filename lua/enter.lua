-- enter.lua: the caller joins the election (appended at the end), or, already a candidate,
-- just refreshes its lease.
-- KEYS, ARGV[1..8]: see prelude.lua (ARGV[4], the caller, is the candidate).
-- Returns { "ok" | "too_many" | "too_big", term, expired, changes }.
begin(false, true)
if is_candidate(caller) then
  refresh(caller, false)
  return finish('ok')
end
local max_candidates, max_bytes = limits()
local count = redis.call('ZCARD', lease_key)
if count >= max_candidates then
  return finish('too_many')
end
local line = caller .. '\n'
-- Many candidates, and nothing of the term read yet (no one expired): append in place, when
-- the stored header has the fixed form (prelude.lua's `header`). Below that the three more
-- commands cost more than the strings they save.
if count >= 64 and raw == false and #clock[1] == 10 then
  local stored = redis.call('GETRANGE', term_key, '0', FIXED_LENGTH)
  if #stored == FIXED_LENGTH + 1 and string.find(stored, '^%d+ %d+ %d+ %d+\n$') then
    if redis.call('STRLEN', term_key) - #stored + #line > max_bytes then
      return finish('too_big')
    end
    refresh(caller, true)
    return finish_append(stored, line)
  end
end
split()
-- what is pending here can only be an expiry's removals (never a `put`)
if #body - from + 1 - cut + #line > max_bytes then
  return finish('too_big')
end
tail = line
changed = true
refresh(caller, true)
return finish('ok')
