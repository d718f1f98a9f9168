-- prelude.lua: shared by every operation script; the store prepends it to each one, so every
-- operation is still one atomic script execution.
--
-- Every operation script takes the same KEYS and leading ARGV:
--   KEYS[1]  the election's term: one JSON string
--            {"id":N,"rev":N,"ts":S,"tsn":NS,"c":["leader","second",...]}
--   KEYS[2]  the election's leases: sorted set, candidate -> lease expiry (Redis clock, ms)
--   KEYS[3]  the lease index of the election's bucket: sorted set, election name -> its
--            earliest lease expiry (what the sweepers poll); same hash slot as KEYS[1..2]
--   ARGV[1]  the pub/sub channel that carries the election's changes
--   ARGV[2]  lease TTL in ms; 0 turns expiry off
--   ARGV[3]  most candidates the election may hold
--   ARGV[4]  the caller's client id, "" when the request carries none
--   ARGV[5]  the election's name (its member in KEYS[3])
--   ARGV[6..] operation-specific (see each script)
-- Every operation script returns { status, term, expired } where term is the JSON above (after
-- the operation), status is "ok" or a rejection ("not_candidate", "too_many", "not_found"), and
-- expired counts the candidates this execution removed because their lease ran out.
--
-- The store puts one line in front of the prelude: `local PUBLISH_COMMAND = '...'`, which is
-- PUBLISH on one Redis (or Sentinel), and SPUBLISH (sharded pub/sub, Redis 7+) on a Redis
-- Cluster, so that events travel only within the election's shard there.
--
-- Time is the Redis server's (TIME), never a replica's. "rev" orders the election's states for
-- event delivery: it goes up with every change, by at least one, and is at least the current
-- time in microseconds, so it keeps going up across Delete (which removes the keys).

local term_key, lease_key, index_key = KEYS[1], KEYS[2], KEYS[3]
local channel = ARGV[1]
local ttl = tonumber(ARGV[2])
local max_candidates = tonumber(ARGV[3])
local caller = ARGV[4]
local election = ARGV[5]

local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now_ms = math.floor(now_us / 1000)

local function num(n)
  return string.format('%.0f', n)
end

local function encode(s)
  -- cjson encodes an empty table as an object, so the empty list is written out by hand
  local c = '[]'
  if #s.c > 0 then
    c = cjson.encode(s.c)
  end
  return '{"id":' .. num(s.id) .. ',"rev":' .. num(s.rev) .. ',"ts":' .. num(s.ts) ..
    ',"tsn":' .. num(s.tsn) .. ',"c":' .. c .. '}'
end

-- The election's state, and whether it exists; a never-used election reads as id 0.
local function load()
  local raw = redis.call('GET', term_key)
  if not raw then
    return { id = 0, rev = 0, ts = 0, tsn = 0, c = {} }, false
  end
  return cjson.decode(raw), true
end

local function leader(s)
  return s.c[1] or ''
end

local function index_of(list, value)
  for i, v in ipairs(list) do
    if v == value then
      return i
    end
  end
  return nil
end

local function next_rev(s)
  return math.max(s.rev + 1, now_us)
end

local expired = 0

-- Drops candidates whose lease ran out; true when any was dropped.
local function expire(s)
  if ttl <= 0 then
    return false
  end
  local dropped = false
  local dead = redis.call('ZRANGEBYSCORE', lease_key, '-inf', now_ms)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now_ms)
    local gone = {}
    for _, d in ipairs(dead) do
      gone[d] = true
    end
    local kept = {}
    for _, c in ipairs(s.c) do
      if gone[c] then
        dropped = true
        expired = expired + 1
      else
        kept[#kept + 1] = c
      end
    end
    s.c = kept
  end
  -- candidates that entered while expiry was off get a lease now, so they cannot stay forever
  if redis.call('ZCARD', lease_key) < #s.c then
    for _, c in ipairs(s.c) do
      redis.call('ZADD', lease_key, 'NX', now_ms + ttl, c)
    end
  end
  return dropped
end

-- Grants or extends `who`'s lease; `only_existing` leaves non-candidates alone.
local function refresh(who, only_existing)
  if ttl <= 0 or who == '' then
    return
  end
  if only_existing then
    redis.call('ZADD', lease_key, 'XX', now_ms + ttl, who)
  else
    redis.call('ZADD', lease_key, now_ms + ttl, who)
  end
end

-- Keeps the bucket's lease index exact: the election's earliest lease expiry, or no entry.
-- Called by every script after it touched leases, in the same atomic execution.
local function reindex()
  local first = redis.call('ZRANGE', lease_key, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', index_key, election)
  else
    redis.call('ZADD', index_key, first[2], election)
  end
end

-- Stores and announces a changed state. The id goes up when leadership passed to another
-- candidate, unless the caller already set it (Restore).
local function commit(s, old_leader, keep_id)
  local new_leader = leader(s)
  if not keep_id and new_leader ~= '' and new_leader ~= old_leader then
    s.id = s.id + 1
  end
  s.rev = next_rev(s)
  s.ts = tonumber(clock[1])
  s.tsn = tonumber(clock[2]) * 1000
  local raw = encode(s)
  redis.call('SET', term_key, raw)
  redis.call(PUBLISH_COMMAND, channel, raw)
  return raw
end

-- Ends every operation: keep the lease index exact, commit when changed, then reply.
local function finish(s, old_leader, changed, status)
  if ttl > 0 then
    reindex()
  end
  if changed then
    return { status, commit(s, old_leader, false), expired }
  end
  return { status, encode(s), expired }
end
