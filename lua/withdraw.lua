-- withdraw.lua: the caller leaves the election (Withdraw, and PrimitiveService.Close).
-- Not a candidate: nothing changes, no error.
-- KEYS, ARGV[1..5]: see prelude.lua (ARGV[4], the caller, is the candidate).
-- Returns { "ok", term, expired }.
local s = load()
local old = leader(s)
local changed = expire(s)
local i = index_of(s.c, caller)
if i then
  table.remove(s.c, i)
  redis.call('ZREM', lease_key, caller)
  changed = true
end
return finish(s, old, changed, 'ok')
