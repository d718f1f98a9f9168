-- create.lua: makes the election exist (PrimitiveService.Create); idempotent, no event.
-- KEYS, ARGV[1..5]: see prelude.lua.
-- Returns { "ok", term, 0 }.
local s, exists = load()
if not exists then
  s.rev = next_rev(s)
  redis.call('SET', term_key, encode(s))
end
return { 'ok', encode(s), 0 }
