-- refresh.lua: the current term, after extending the caller's lease. Serves GetTerm and
-- Snapshot (the caller's lease) and the sweeper (no caller, and the lease index read again).
-- Only a candidate's lease is extended; it never makes anyone a candidate. Expired candidates
-- are dropped first, so no answer shows one and a lease that already ran out is not brought
-- back.
-- KEYS, ARGV[1..6]: see prelude.lua (ARGV[4], the caller, may be "").
-- Returns { "ok", term, expired }.
begin()
if caller == '' then
  -- the sweeper: the index may be stale from a time when expiry was off
  reindex_all = true
end
refresh(caller, false)
return finish('ok')
