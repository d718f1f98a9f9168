-- restore.lua: replaces leader and candidates with a snapshot's (validated by the service).
-- The id becomes at least the snapshot's and at least the current one, and when leadership
-- passes to another candidate, at least the id a new leader gets here (`next_id`: one above the
-- current one, and never below this master's epoch). Every restored candidate gets a fresh
-- lease.
-- KEYS, ARGV[1..8]: see prelude.lua. ARGV[9]: the snapshot's id; ARGV[10..]: its candidates,
-- leader first.
-- Returns { "ok", term, expired, changes }.
local snap_id = tonumber(ARGV[9])
local lines = {}
for i = 10, #ARGV do
  lines[#lines + 1] = ARGV[i] .. '\n'
end
local candidates = table.concat(lines)
begin()
split()
local stored = raw
local id = tonumber(string.match(head, '^(%d+)'))
local old = stored_leader()
local new_id = math.max(snap_id, id)
local new_leader = ARGV[10] or ''
if new_leader ~= '' and new_leader ~= old then
  new_id = math.max(new_id, next_id(id))
end
if new_id == id and candidates == list_string() then
  return finish('ok')
end
-- the memberships follow: the candidates that go leave, those that come join
local restored = {}
for i = 10, #ARGV do
  restored[ARGV[i]] = true
end
for _, c in ipairs(redis.call('ZRANGE', lease_key, '0', '-1')) do
  if not restored[c] then
    left(c)
  end
end
redis.call('DEL', lease_key)
local score = '0'
if ttl > 0 then
  score = lease()
end
local batch, memberships = {}, {}
for i = 10, #ARGV do
  batch[#batch + 1] = score
  batch[#batch + 1] = ARGV[i]
  memberships[#memberships + 1] = '0'
  memberships[#memberships + 1] = ARGV[i] .. '\n' .. election
  if #batch >= 1000 or i == #ARGV then
    redis.call('ZADD', lease_key, unpack(batch))
    redis.call('ZADD', members_key, unpack(memberships))
    batch, memberships = {}, {}
  end
end
reindex_all = true
reindex()
-- the id is set here, not by commit's leader rule
local rev = tonumber(string.match(head, '^%d+ (%d+)'))
raw = header(new_id, math.max(rev + 1, now_us), #candidates) .. '\n' .. candidates
redis.call('SET', term_key, raw)
redis.call(PUBLISH_COMMAND, channel, raw)
if not stored then
  born()
end
if new_leader ~= old then
  record(new_id, new_leader, own_cause)
end
return { 'ok', raw, expired + swept, changes }
