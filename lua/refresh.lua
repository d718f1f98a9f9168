-- refresh.lua: the current term, after extending leases. Serves GetTerm and Snapshot (the
-- caller's lease), the Events streams' keep-alive (the leases of clients holding a stream open
-- on a replica) and the sweeper (no one's). Only candidates' leases are extended; it never
-- makes anyone a candidate. Expired candidates are dropped first, so no answer shows one and a
-- lease that already ran out is not brought back.
-- KEYS, ARGV[1..5]: see prelude.lua (ARGV[4], the caller, may be ""). ARGV[6..]: more client ids.
-- Returns { "ok", term, expired }.
local s = load()
local old = leader(s)
local changed = expire(s)
refresh(caller, true)
for i = 6, #ARGV do
  refresh(ARGV[i], true)
end
return finish(s, old, changed, 'ok')
