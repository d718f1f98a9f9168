-- delete.lua: wipes the election (PrimitiveService.Delete); a later use starts from id 0.
-- Watchers are told: they receive the empty state, with a revision above the deleted one.
-- KEYS, ARGV[1..8]: see prelude.lua.
-- Returns { "ok" | "not_found", term, 0, "delete" | "" }.
if not load() then
  return { 'not_found', '0 0 0 0\n', 0, '' }
end
local rev = tonumber(string.match(raw, '^%d+ (%d+)'))
for _, c in ipairs(redis.call('ZRANGE', lease_key, '0', '-1')) do
  left(c)
end
redis.call('DEL', term_key, lease_key)
redis.call('ZREM', index_key, election)
redis.call('ZREM', beside('names', true), election)
-- recorded whether or not it had a leader: the history says when it was wiped
record(0, '', 'delete')
if tonumber(history_arg) > 0 then
  redis.call('EXPIRE', beside('history'), DELETED_HISTORY_SECONDS)
end
local empty = string.format('0 %d 0 0\n', math.max(rev + 1, now_us))
redis.call(PUBLISH_COMMAND, channel, empty)
return { 'ok', empty, 0, changes }
