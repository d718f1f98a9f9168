-- refresh.lua: the current term, after extending the caller's lease. Serves GetTerm and
-- Snapshot. Only a candidate's lease is extended; it never makes anyone a candidate. Expired
-- candidates are dropped first, so no answer shows one and a lease that already ran out is not
-- brought back.
-- KEYS, ARGV[1..6]: see prelude.lua (ARGV[4], the caller, may be "").
-- Returns { "ok", term, expired }.
begin(caller == '')
refresh(caller, false)
return finish('ok')
