-- withdraw.lua: the caller leaves the election (Withdraw, and PrimitiveService.Close).
-- Not a candidate: nothing changes, no error.
-- KEYS, ARGV[1..8]: see prelude.lua (ARGV[4], the caller, is the candidate).
-- Returns { "ok", term, expired, changes }.
begin()
if is_candidate(caller) then
  drop(caller)
end
return finish('ok')
