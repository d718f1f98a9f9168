-- refresh.lua: the current term, after extending the caller's lease. Serves GetTerm and
-- Snapshot. Only a candidate's lease is extended; it never makes anyone a candidate. Expired
-- candidates are dropped first, so no answer shows one and a lease that already ran out is not
-- brought back.
-- KEYS, ARGV[1..8]: see prelude.lua (ARGV[4], the caller, may be ""). ARGV[9], optional: the
-- revision of the state the replica already holds of this (big) election.
-- Returns { "ok", term, expired, changes }, or { "same", "", 0, "" } when nothing expired and
-- the stored state is still that revision: then the list is not read at all, which on a big
-- election is nearly all a GetTerm costs.
local known = ARGV[9]
begin(caller == '', known ~= nil)
refresh(caller, false)
if known and not changed then
  -- the header is the first line, under 64 bytes in either form; its numbers may be padded
  local rev = string.match(redis.call('GETRANGE', term_key, '0', '63'), '^%d+ 0*(%d+) ')
  if rev == known then
    reindex()
    return { 'same', '', swept, '' }
  end
end
return finish('ok')
