-- prelude.lua: the shared part of the election library. The store loads one Redis Functions
-- library (FUNCTION LOAD, Redis 7+): this prelude, then each operation file (enter.lua, ...)
-- as the body of one registered function that starts with `start(KEYS, ARGV)`. So every
-- operation is one atomic function call (FCALL), and the helpers below are built once, when
-- the library loads, not on every call.
--
-- Every operation takes the same KEYS and leading ARGV:
--   KEYS[1]  the election's term: one string, a header line and then one line per candidate,
--            leader first:  "<id> <rev> <ts> <tsn>\n<leader>\n<second>\n..."
--   KEYS[2]  the election's members: sorted set, candidate -> lease expiry (Redis clock, ms),
--            or 0 for a candidate that entered while expiry was off; it holds exactly the
--            candidates, so membership and the count are read here, not from KEYS[1]
--   KEYS[3]  the lease index of the election's bucket: sorted set, election name -> its
--            earliest lease expiry (what the sweepers poll); same hash slot as KEYS[1..2]
--   ARGV[1]  the pub/sub channel that carries the election's changes
--   ARGV[2]  lease TTL in ms; 0 turns expiry off
--   ARGV[3]  most candidates the election may hold
--   ARGV[4]  the caller's client id, "" when the request carries none
--   ARGV[5]  the election's name (its member in KEYS[3])
--   ARGV[6]  largest candidate list the election may hold, in bytes (the lines after the header)
--   ARGV[7..] operation-specific (see each file)
-- Candidate ids arrive escaped by the service ("\" as "\\", a line feed as "\n"), so a line
-- feed in the term only ever ends a candidate, and the functions never decode or re-encode the
-- candidate list: they cut and join it as a string. An operation's Lua work grows with what it
-- changes, not with the election's size (a mass expiry rebuilds the list once).
--
-- Every operation returns { status, term, expired } where term is the string above (after the
-- operation), status is "ok" or a rejection ("not_candidate", "too_many", "too_big",
-- "not_found"), and expired counts the candidates this call removed because their lease ran out.
--
-- The store puts one line in front of the prelude: `local PUBLISH_COMMAND = '...'`, which is
-- PUBLISH on one Redis (or Sentinel), and SPUBLISH (sharded pub/sub) on a Redis Cluster, so
-- that events travel only within the election's shard there.
--
-- Time is the Redis server's (TIME), never a replica's. "rev" orders the election's states for
-- event delivery: it goes up with every change, by at least one, and is at least the current
-- time in microseconds, so it keeps going up across Delete (which removes the keys).
--
-- The state of one call lives in the locals below, and `start` sets every one of them: calls
-- run one at a time, and nothing carries over from one call to the next.

local term_key, lease_key, index_key, channel, election, caller
local ttl, max_candidates_arg, max_bytes_arg
local clock, now_us, now_ms, lease_until, lease_arg
-- The election as loaded: `raw` is the stored string (nil: never used), `head` its header
-- line without the line feed, `list` the candidate lines. Split lazily: reads need neither.
local raw, head, list
local changed, expired
-- The lease index is kept exact without reading the whole member set: the two earliest leases
-- as they were before this call, and what the changes so far did to the earliest. One change
-- is worked out from those two; a second one reads the earliest again at the end.
local m1, s1, m2, s2
local noted, earliest, reindex_all

local function start(keys, argv)
  term_key, lease_key, index_key = keys[1], keys[2], keys[3]
  channel, election, caller = argv[1], argv[5], argv[4]
  -- numbers only an operation that needs them reads: each tonumber is a strtod, and a read
  -- needs none of these
  ttl, max_candidates_arg, max_bytes_arg = tonumber(argv[2]), argv[3], argv[6]
  clock = redis.call('TIME')
  now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  now_ms = math.floor(now_us / 1000)
  lease_until = now_ms + ttl
  lease_arg = nil
  raw, head, list = nil, nil, nil
  changed, expired = false, 0
  m1, s1, m2, s2 = nil, nil, nil, nil
  noted, earliest, reindex_all = false, nil, false
end

-- The most candidates, and the most bytes of candidate lines, the election may hold.
local function limits()
  return tonumber(max_candidates_arg), tonumber(max_bytes_arg)
end

-- A lease granted now, as a command argument: formatted once per call, when first needed
-- (Redis would format a Lua number with '%.17g' each time).
local function lease()
  if not lease_arg then
    lease_arg = string.format('%d', lease_until)
  end
  return lease_arg
end

local function split()
  if list then
    return
  end
  if not raw then
    head, list = '0 0 0 0', ''
    return
  end
  local nl = string.find(raw, '\n', 1, true)
  head, list = string.sub(raw, 1, nl - 1), string.sub(raw, nl + 1)
end

-- The line of `s` that starts at `from`, or '' when there is none.
local function line_at(s, from)
  local nl = string.find(s, '\n', from, true)
  if not nl then
    return ''
  end
  return string.sub(s, from, nl - 1)
end

-- The leader as stored before this execution.
local function stored_leader()
  if not raw then
    return ''
  end
  return line_at(raw, string.find(raw, '\n', 1, true) + 1)
end

-- Where candidate `c`'s line starts in the list, or nil.
local function position(c)
  local n = #c
  if string.sub(list, 1, n + 1) == c .. '\n' then
    return 1
  end
  local at = string.find(list, '\n' .. c .. '\n', 1, true)
  if at then
    return at + 1
  end
  return nil
end

local function remove_line(at, c)
  list = string.sub(list, 1, at - 1) .. string.sub(list, at + #c + 1)
end

-- Converts a term stored by an earlier version (one JSON object, raw candidate ids) in place.
local function upgrade()
  local s = cjson.decode(raw)
  local lines = {}
  for i, c in ipairs(s.c) do
    local e = string.gsub(string.gsub(c, '\\', '\\\\'), '\n', '\\n')
    if e ~= c then
      local score = redis.call('ZSCORE', lease_key, c)
      if score then
        redis.call('ZREM', lease_key, c)
        redis.call('ZADD', lease_key, score, e)
      end
    end
    -- candidates that entered while expiry was off had no member entry
    redis.call('ZADD', lease_key, 'NX', '0', e)
    lines[i] = e .. '\n'
  end
  raw = string.format('%.0f %.0f %.0f %.0f\n', s.id, s.rev, s.ts, s.tsn) .. table.concat(lines)
  redis.call('SET', term_key, raw)
end

-- Reads the stored term; returns whether the election exists.
local function load()
  raw = redis.call('GET', term_key)
  if not raw then
    raw = nil
    return false
  end
  if string.byte(raw, 1) == 123 then
    upgrade()
  end
  return true
end

local function look()
  local r = redis.call('ZRANGE', lease_key, '0', '1', 'WITHSCORES')
  m1, s1, m2, s2 = r[1], tonumber(r[2]), r[3], tonumber(r[4])
  earliest = s1
end

-- The earliest lease alone, for a call that changes no lease itself: the lease index holds
-- it (kept exact by every change), one score instead of two members and their scores. An
-- election the index does not list (no lease granted yet, or candidates that entered while
-- expiry was off) is looked at in full.
local function peek()
  local s = redis.call('ZSCORE', index_key, election)
  if not s then
    look()
    return
  end
  s1 = tonumber(s)
  earliest = s1
end

-- Notes that member `c` now has lease `score` (it may be new).
local function noted_set(c, score)
  if noted then
    reindex_all = true
  end
  noted = true
  if reindex_all then
    return
  end
  if c == m1 then
    earliest = score
    if s2 and s2 < score then
      earliest = s2
    end
  elseif earliest == nil or score < earliest then
    earliest = score
  end
end

-- Notes that member `c` is gone.
local function noted_removed(c)
  if noted then
    reindex_all = true
  end
  noted = true
  if not reindex_all and c == m1 then
    earliest = s2
  end
end

-- Gives leases to candidates that entered while expiry was off, and drops candidates whose
-- lease ran out; only when the earliest lease says either is there.
local function expire()
  if ttl <= 0 or s1 == nil or s1 > now_ms then
    return
  end
  reindex_all = true
  local unleased = redis.call('ZRANGEBYSCORE', lease_key, '0', '0')
  for _, c in ipairs(unleased) do
    redis.call('ZADD', lease_key, lease(), c)
  end
  local dead = redis.call('ZRANGEBYSCORE', lease_key, '(0', now_ms)
  if #dead == 0 then
    return
  end
  redis.call('ZREMRANGEBYSCORE', lease_key, '(0', now_ms)
  split()
  expired = #dead
  changed = true
  if #dead <= 8 then
    for _, c in ipairs(dead) do
      local at = position(c)
      if at then
        remove_line(at, c)
      end
    end
    return
  end
  -- many at once: rebuild the list in one pass
  local gone = {}
  for _, c in ipairs(dead) do
    gone[c] = true
  end
  local kept = {}
  for c in string.gmatch(list, '([^\n]*)\n') do
    if not gone[c] then
      kept[#kept + 1] = c .. '\n'
    end
  end
  list = table.concat(kept)
end

-- Loads the election and applies expiry: how every operation but Create and Delete starts.
-- `reading`: the call will change no lease itself (a GetTerm without a client id).
local function begin(reading)
  local exists = load()
  if ttl > 0 then
    if reading then
      peek()
    else
      look()
    end
    expire()
  end
  return exists
end

local function is_candidate(c)
  return c ~= '' and redis.call('ZSCORE', lease_key, c) ~= false
end

-- Grants or extends a candidate's lease; with `join`, makes `c` a member first.
local function refresh(c, join)
  if c == '' then
    return
  end
  if ttl <= 0 then
    if join then
      redis.call('ZADD', lease_key, 'NX', '0', c)
    end
    return
  end
  if join then
    redis.call('ZADD', lease_key, lease(), c)
  elseif redis.call('ZADD', lease_key, 'XX', 'CH', lease(), c) == 0 then
    -- not a candidate (or its lease was already this one): nothing moved
    if not is_candidate(c) then
      return
    end
  end
  noted_set(c, lease_until)
end

-- Removes a candidate's line and its member entry.
local function drop(c)
  split()
  local at = position(c)
  if at then
    remove_line(at, c)
  end
  redis.call('ZREM', lease_key, c)
  noted_removed(c)
  changed = true
end

local function reindex()
  if ttl <= 0 then
    return
  end
  if reindex_all then
    local first = redis.call('ZRANGE', lease_key, '0', '0', 'WITHSCORES')
    earliest = tonumber(first[2])
  elseif earliest == s1 then
    return
  end
  if earliest == nil then
    redis.call('ZREM', index_key, election)
  else
    redis.call('ZADD', index_key, string.format('%d', earliest), election)
  end
end

local function header(id, rev)
  return string.format('%d %d %s %s000', id, rev, clock[1], clock[2])
end

-- Stores and announces the changed state. The id goes up when leadership passed to another
-- candidate.
local function commit()
  local id, rev = string.match(head, '^(%d+) (%d+)')
  id, rev = tonumber(id), tonumber(rev)
  local new_leader = line_at(list, 1)
  if new_leader ~= '' and new_leader ~= stored_leader() then
    id = id + 1
  end
  raw = header(id, math.max(rev + 1, now_us)) .. '\n' .. list
  redis.call('SET', term_key, raw)
  redis.call(PUBLISH_COMMAND, channel, raw)
end

-- Ends every operation: keep the lease index exact, commit when changed, then reply.
local function finish(status)
  reindex()
  if changed then
    commit()
  end
  return { status, raw or '0 0 0 0\n', expired }
end
