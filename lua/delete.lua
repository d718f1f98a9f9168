-- delete.lua: wipes the election (PrimitiveService.Delete); a later use starts from id 0.
-- Watchers are told: they receive the empty state, with a revision above the deleted one.
-- KEYS, ARGV[1..5]: see prelude.lua.
-- Returns { "ok" | "not_found", term, 0 }.
local s, exists = load()
if not exists then
  return { 'not_found', encode(s), 0 }
end
redis.call('DEL', term_key, lease_key)
redis.call('ZREM', index_key, election)
local empty = { id = 0, rev = next_rev(s), ts = 0, tsn = 0, c = {} }
local raw = encode(empty)
redis.call(PUBLISH_COMMAND, channel, raw)
return { 'ok', raw, 0 }
