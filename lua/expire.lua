-- expire.lua: what the sweeper runs on an election that its bucket's lease index says is due:
-- drops the candidates whose lease ran out, and reads the earliest lease again for the index,
-- which may be stale from a time when expiry was off.
-- KEYS, ARGV[1..8]: see prelude.lua (ARGV[4] is "").
-- Returns { "ok", term, expired, changes }.
begin()
reindex_all = true
return finish('ok')
