-- refresh.lua: extends the leases of clients that hold an Events stream open on this replica
-- (only those that are candidates; it never makes anyone a candidate). Drops expired
-- candidates first, so a lease that already ran out is not brought back.
-- KEYS, ARGV[1..5]: see prelude.lua (ARGV[4] unused). ARGV[6..]: the client ids.
-- Returns { "ok", term, expired }.
local s = load()
local old = leader(s)
local changed = expire(s)
for i = 6, #ARGV do
  refresh(ARGV[i], true)
end
return finish(s, old, changed, 'ok')
