-- restore.lua: replaces leader and candidates with a snapshot's (validated by the service).
-- The id becomes at least the snapshot's and at least the current one, and strictly above the
-- current one when leadership passes to another candidate. Every restored candidate gets a
-- fresh lease.
-- KEYS, ARGV[1..5]: see prelude.lua. ARGV[6]: the snapshot's id; ARGV[7..]: its candidates,
-- leader first.
-- Returns { "ok", term, expired }.
local snap_id = tonumber(ARGV[6])
local candidates = {}
for i = 7, #ARGV do
  candidates[#candidates + 1] = ARGV[i]
end
local s = load()
local old = leader(s)
local changed = expire(s)
local id = math.max(snap_id, s.id)
local new_leader = candidates[1] or ''
if new_leader ~= '' and new_leader ~= old and id == s.id then
  id = s.id + 1
end
local same = id == s.id and #candidates == #s.c
if same then
  for i, c in ipairs(candidates) do
    if s.c[i] ~= c then
      same = false
      break
    end
  end
end
if same then
  return finish(s, old, changed, 'ok')
end
s.id = id
s.c = candidates
redis.call('DEL', lease_key)
if ttl > 0 then
  for _, c in ipairs(candidates) do
    redis.call('ZADD', lease_key, now_ms + ttl, c)
  end
end
if ttl > 0 then
  reindex()
end
return { 'ok', commit(s, old, true), expired }
