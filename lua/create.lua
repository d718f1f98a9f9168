-- create.lua: makes the election exist (PrimitiveService.Create); idempotent, no event.
-- KEYS, ARGV[1..8]: see prelude.lua.
-- Returns { "ok", term, 0, "" }.
if not load() then
  raw = string.format('0 %d 0 0\n', now_us)
  redis.call('SET', term_key, raw)
  born()
end
return { 'ok', raw, 0, '' }
