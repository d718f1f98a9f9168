-- prelude.lua: the shared part of the election library. The store loads one Redis Functions
-- library (FUNCTION LOAD, Redis 7+): this prelude, then each operation file (enter.lua, ...)
-- as the body of one registered function that starts with `start(KEYS, ARGV)` and
-- `end_sessions()`. So every
-- operation is one atomic function call (FCALL), and the helpers below are built once, when
-- the library loads, not on every call.
--
-- Every operation takes the same KEYS and leading ARGV (KEYS[1..3] are its bucket's, KEYS[4..5]
-- its election's; KeepAlive, which acts on buckets, passes three for each bucket instead):
--   KEYS[1]  the lease index of the election's bucket: sorted set, election name -> its
--            earliest lease expiry (what the sweepers poll)
--   KEYS[2]  the sessions of the bucket: sorted set, client -> when its session ends (ms, Redis
--            clock). A candidate whose own lease ran out while its client's session runs is
--            held by the session (its lease becomes HELD, see `expire`), so one KeepAlive per
--            bucket keeps a client in all its elections there, and nothing comes due while it
--            lasts; a session that runs out ends its client's held candidacies in the next
--            call on the bucket (`end_sessions`), which the sweepers make in time through the
--            lease index's entry "" (no election has that name): the earliest session end
--   KEYS[3]  the bucket's memberships: sorted set, all scores 0, members "<client>\n<election>"
--            for every candidate of every election of the bucket, so a client's elections are
--            one lexicographic range (the client id is escaped and holds no line feed)
--   KEYS[4]  the election's term: one string, a header line and then one line per candidate,
--            leader first:  "<id> <rev> <ts> <tsn>\n<leader>\n<second>\n..."; over 2 KB of
--            candidates, the header's numbers are zero-padded to a fixed width, so that an
--            append to a big election rewrites the header in place (SETRANGE) and adds its line
--            (APPEND) without the list ever passing through Lua (see `header`); terms stored
--            by earlier versions (one JSON object) get this form on their next change
--   KEYS[5]  the election's members: sorted set, candidate -> lease expiry (Redis clock, ms),
--            HELD for one its session holds, or 0 for a candidate that entered while expiry
--            was off; it holds exactly the
--            candidates, so membership and the count are read here, not from KEYS[4]
-- All five share the bucket's hash slot.
--   ARGV[1]  the pub/sub channel that carries the election's changes
--   ARGV[2]  lease TTL in ms; 0 turns expiry off
--   ARGV[3]  most candidates the election may hold
--   ARGV[4]  the caller's client id, "" when the request carries none
--   ARGV[5]  the election's name (its member in KEYS[3])
--   ARGV[6]  largest candidate list the election may hold, in bytes (the lines after the header)
--   ARGV[7]  the failover epoch of the master this runs on, as the Sentinels name it (0 for one
--            Redis; unused on a Redis Cluster, where the node's own epoch is read): see next_id
--   ARGV[8]  how many leadership changes each election's history keeps (see `record`)
--   ARGV[9..] operation-specific (see each file); KeepAlive's ARGV[9] is the bucket's key prefix
-- Candidate ids arrive escaped by the service ("\" as "\\", a line feed as "\n"), so a line
-- feed in the term only ever ends a candidate, and the functions never decode or re-encode the
-- candidate list: they cut and join it as a string.
--
-- What a big election costs is the strings Lua makes: Redis 7.0's Lua hashes every byte of
-- every string it creates (a 280 KB term costs about 0.6 ms to bring in with GET alone). So a
-- change is kept as an edit pending on the stored string and joined with the new header in one
-- concatenation at the end: GET, the pieces kept, the new term, three strings of the term's
-- size where cutting and joining step by step made five. A join at the end of a big election
-- makes one (see enter.lua).
--
-- Every operation returns { status, term, expired, changes } where term is the string above
-- (after the operation), status is "ok" or a rejection ("not_candidate", "too_many", "too_big",
-- "not_found"), expired counts the candidates this call removed because their lease ran out,
-- and changes names the cause of each change of leader this call made (see `record`),
-- separated by spaces ("" for none).
--
-- Beside its keys above, each election has a history (a list, newest first, at
-- "<bucket prefix><election>:history": see `record`), and each bucket a set of its elections'
-- names (sorted set, all scores 0, at "<bucket prefix>names"): what listing pages through. An
-- election is in it from the call that first stores its term until Delete. Both are named
-- from the keys given (the same hash slot), like the other elections a session's end opens.
--
-- The store puts one line in front of the prelude: `local CLUSTER = true` on a Redis Cluster,
-- `false` otherwise. On a Cluster changes are published with SPUBLISH (sharded pub/sub), so
-- that events travel only within the election's shard, and the epoch is the node's own.
--
-- Time is the Redis server's (TIME), never a replica's. "rev" orders the election's states for
-- event delivery: it goes up with every change, by at least one, and is at least the current
-- time in microseconds, so it keeps going up across Delete (which removes the keys).
--
-- The state of one call lives in the locals below, and `start` sets every one of them: calls
-- run one at a time, and nothing carries over from one call to the next (but for the epoch a
-- Cluster node read last, see `epoch`).

local PUBLISH_COMMAND = CLUSTER and 'SPUBLISH' or 'PUBLISH'

-- The lease of a candidate held by its client's session: after every real lease (a Redis clock
-- in ms), exact as a double and as a score.
local HELD = 9000000000000000
local HELD_ARG = '9000000000000000'

local term_key, lease_key, index_key, sessions_key, members_key, channel, election, caller
local ttl, max_candidates_arg, max_bytes_arg, epoch_arg, bucket_arg
local clock, now_us, now_ms, lease_until, lease_arg
-- The election as loaded, on first use: `raw` is the stored string (nil: no such election;
-- false: not read yet), `head` its header line without the line feed.
local raw, head
-- The candidate list as it stands after this call's changes so far: the bytes of `body` from
-- `from` on (at first `body` is `raw`, and the list starts after its header), with one edit
-- pending on them (the `cut` bytes at `at` replaced by `put`), `front` before them and `tail`
-- after them. `split` sets all of it up (nil `body`: not yet); nothing is joined until the end.
-- (Every Lua instruction counts here: `start` resets only what `split` does not set.)
local body, from, at, cut, put, front, tail
local changed, expired
-- What the call is (the cause of a change of leader it makes: enter, withdraw, anoint,
-- promote, evict, restore, delete, or expired for the sweepers' and sessions' calls), the cause
-- of changes in the election open now (`expired` in the elections a session's end opens, or
-- when the leader's own lease ran out in this call), the history's length, and the causes of
-- the changes of leader made so far (their causes, separated by spaces). The length stays the
-- argument's string until a change needs it: a call that changes no leader pays nothing for it.
local own_cause, cause, history_arg, changes
-- Candidates this call removed from other elections of the bucket, whose sessions ended
-- (`end_sessions`, keepalive.lua): counted with `expired` in the reply.
local swept
-- The lease index is kept exact without reading the whole member set: the two earliest leases
-- as they were before this call, and what the changes so far did to the earliest. One change
-- is worked out from those two; a second one reads the earliest again at the end.
local m1, s1, m2, s2
local noted, earliest, reindex_all

local function start(keys, argv, op_cause)
  own_cause, cause, changes, history_arg = op_cause, op_cause, '', argv[8]
  index_key, sessions_key, members_key = keys[1], keys[2], keys[3]
  term_key, lease_key = keys[4], keys[5]
  channel, election, caller = argv[1], argv[5], argv[4]
  -- numbers only an operation that needs them reads: each tonumber is a strtod, and a read
  -- needs none of these
  ttl, max_candidates_arg, max_bytes_arg, epoch_arg = tonumber(argv[2]), argv[3], argv[6], argv[7]
  bucket_arg = argv[9]
  clock = redis.call('TIME')
  now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  now_ms = math.floor(now_us / 1000)
  lease_until = now_ms + ttl
  lease_arg = nil
  raw, head, body = false, nil, nil
  changed, expired, swept = false, 0, 0
  m1, s1, m2, s2 = nil, nil, nil, nil
  noted, earliest, reindex_all = false, nil, false
end

-- Turns to another election of the same bucket, whose keys start with `prefix` (what ending
-- a session does for each of its client's elections), or back to the call's own. The clock
-- stays.
local function open(prefix, name)
  term_key, lease_key = prefix .. name .. ':term', prefix .. name .. ':leases'
  channel, election = prefix .. name .. ':events', name
  cause = 'expired'
  raw, head, body = false, nil, nil
  changed, expired = false, 0
  m1, s1, m2, s2 = nil, nil, nil, nil
  noted, earliest, reindex_all = false, nil, false
end

-- Runs `command` on `key` with the members of `list`, in batches that Lua's unpack takes.
local function batched(command, key, list)
  for i = 1, #list, 1000 do
    redis.call(command, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- The memberships of client `c` in this bucket: their lexicographic range.
local function range_of(c)
  return '[' .. c .. '\n', '(' .. c .. '\011'
end

-- Notes that `c` is now a candidate of this election.
local function joined(c)
  redis.call('ZADD', members_key, '0', c .. '\n' .. election)
end

-- Keeps the lease index's entry for the bucket's sessions: their earliest end, or none.
local function index_sessions()
  local first = redis.call('ZRANGE', sessions_key, '0', '0', 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', index_key, first[2], '')
  else
    redis.call('ZREM', index_key, '')
  end
end

-- Notes that `c` is no longer a candidate of this election. Its session in the bucket ends
-- with its last candidacy there.
local function left(c)
  redis.call('ZREM', members_key, c .. '\n' .. election)
  local lo, hi = range_of(c)
  if redis.call('ZLEXCOUNT', members_key, lo, hi) == 0 then
    if redis.call('ZREM', sessions_key, c) == 1 then
      index_sessions()
    end
  end
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

-- Candidate lists of at least this many bytes get the fixed-width header, which lets an
-- Enter append in place (see enter.lua). Smaller ones keep the short form: its numbers are
-- cheaper to format and parse, and their strings cost little to remake.
local FIXED_FROM = 2048
-- The header in fixed form is 62 bytes: "%020d %020d <seconds> <microseconds, 6 digits>000"
-- (TIME's seconds have 10 digits until the year 2286; a header of another length is simply
-- not taken for the fixed form).
local FIXED_LENGTH = 62

-- The header of a change made now (without its line feed), for a list of `bytes` bytes.
local function header(id, rev, bytes)
  if bytes < FIXED_FROM then
    return string.format('%d %d %s %s000', id, rev, clock[1], clock[2])
  end
  return string.format('%020d %020d %s %s%s000', id, rev, clock[1],
    string.rep('0', 6 - #clock[2]), clock[2])
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
    joined(e)
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

-- Sets up the candidate list (see `body` above), loading the election first if need be.
local function split()
  if body then
    return
  end
  if raw == false then
    load()
  end
  at, cut, put, front, tail = nil, 0, '', '', ''
  if not raw then
    head, body, from = '0 0 0 0', '', 1
    return
  end
  local nl = string.find(raw, '\n', 1, true)
  head, body, from = string.sub(raw, 1, nl - 1), raw, nl + 1
end

-- The line of `s` that starts at `i`, or '' when there is none.
local function line_at(s, i)
  local nl = string.find(s, '\n', i, true)
  if not nl then
    return ''
  end
  return string.sub(s, i, nl - 1)
end

-- The leader as stored before this execution.
local function stored_leader()
  if not raw then
    return ''
  end
  return line_at(raw, string.find(raw, '\n', 1, true) + 1)
end

-- The bytes of the list before and after the pending edit ('' after when there is none).
local function pieces()
  if at then
    return string.sub(body, from, at - 1), string.sub(body, at + cut)
  elseif from == 1 then
    return body, ''
  end
  return string.sub(body, from), ''
end

-- Joins what is pending into `body` alone, before a second edit.
local function settle()
  local before, after = pieces()
  body, from = front .. before .. put .. after .. tail, 1
  at, cut, put, front, tail = nil, 0, '', '', ''
end

-- The candidate list as one string.
local function list_string()
  split()
  if at or from > 1 or front ~= '' or tail ~= '' then
    settle()
  end
  return body
end

-- Where candidate `c`'s line starts in `body`, or nil (after settling an earlier edit).
local function position(c)
  split()
  if at or front ~= '' or tail ~= '' then
    settle()
  end
  local line = c .. '\n'
  if string.sub(body, from, from + #c) == line then
    return from
  end
  -- the byte before `from` is the header's line feed, when there is a header
  local i = string.find(body, '\n' .. line, from > 1 and from - 1 or 1, true)
  if i then
    return i + 1
  end
  return nil
end

-- Removes candidate `c`'s line, at `i` from `position`.
local function remove_line(i, c)
  at, cut, put = i, #c + 1, ''
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
  local due = redis.call('ZRANGEBYSCORE', lease_key, '(0', now_ms)
  if #due == 0 then
    return
  end
  -- A candidate whose own lease ran out is still one while its client's session runs: the
  -- session holds it from now on (HELD), so that it comes due no more; `end_sessions` ends it
  -- with the session. A session running now has run since before this lease ran out: one
  -- that ends is taken away in the next call on the bucket, before anything else, and a new
  -- one starts only after its client's candidacies that ran out meanwhile were removed (see
  -- keepalive.lua).
  -- Its membership is noted again as it is held: a candidacy entered by a build before
  -- sessions has none, and the session's end must find every candidacy it holds.
  local dead, kept, members = {}, {}, {}
  for i = 1, #due, 1000 do
    local batch = { unpack(due, i, math.min(i + 999, #due)) }
    local ends = redis.call('ZMSCORE', sessions_key, unpack(batch))
    for j, c in ipairs(batch) do
      local ends_at = ends[j]
      if ends_at and tonumber(ends_at) > now_ms then
        kept[#kept + 1] = HELD_ARG
        kept[#kept + 1] = c
        members[#members + 1] = '0'
        members[#members + 1] = c .. '\n' .. election
      else
        dead[#dead + 1] = c
      end
    end
  end
  for i = 1, #kept, 1000 do
    redis.call('ZADD', lease_key, unpack(kept, i, math.min(i + 999, #kept)))
    redis.call('ZADD', members_key, unpack(members, i, math.min(i + 999, #members)))
  end
  if #dead == 0 then
    return
  end
  batched('ZREM', lease_key, dead)
  split()
  local leader = stored_leader()
  for _, c in ipairs(dead) do
    left(c)
    if c == leader then
      -- the leader's own lease ran out: that is why leadership changes in this call
      cause = 'expired'
    end
  end
  expired = #dead
  changed = true
  if #dead <= 8 then
    for _, c in ipairs(dead) do
      local i = position(c)
      if i then
        remove_line(i, c)
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
  for c in string.gmatch(list_string(), '([^\n]*)\n') do
    if not gone[c] then
      kept[#kept + 1] = c .. '\n'
    end
  end
  body, from = table.concat(kept), 1
end

-- Loads the election and applies expiry: how every operation but Create and Delete starts.
-- `reading`: the call will change no lease itself (a GetTerm without a client id). `lazy`:
-- load the term only when something needs it (Enter, which may append without it).
local function begin(reading, lazy)
  if not lazy then
    load()
  end
  if ttl > 0 then
    if reading then
      peek()
    else
      look()
    end
    expire()
  end
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
      joined(c)
    end
    return
  end
  if join then
    redis.call('ZADD', lease_key, lease(), c)
    joined(c)
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
  local i = position(c)
  if i then
    remove_line(i, c)
  end
  redis.call('ZREM', lease_key, c)
  left(c)
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
  -- an election whose candidates its sessions hold all comes due never: `end_sessions` ends
  -- them
  if earliest == nil or earliest >= HELD then
    redis.call('ZREM', index_key, election)
  else
    redis.call('ZADD', index_key, string.format('%d', earliest), election)
  end
end

-- Term ids are fencing tokens, and Redis replication is asynchronous: a master cut off from
-- the rest can go on handing out ids while a replica is promoted in its place, and what it
-- wrote meanwhile is dropped when it rejoins. So that no id is ever handed out twice, each
-- master hands out ids from a range of its own: a new leader's id is one above the last, and
-- at least the master's failover epoch times EPOCH_SPAN. The epoch is the one Redis's own
-- failover agrees on (Sentinel's config epoch, passed in ARGV[7]; a Cluster node's config epoch,
-- read here), so a promoted replica's epoch is above that of any master before it, and the ids
-- it hands out are above every id the old master could have handed out (unless the old master
-- handed out EPOCH_SPAN ids of one election in its tenure). One Redis stays in epoch 0: ids
-- 1, 2, 3, ... as before.
local EPOCH_SPAN = 1000000000

-- On a Cluster, this node's epoch as last read, and its replication id then. CLUSTER INFO
-- walks every slot (about 265,000 instructions; INFO replication about 20,000, a whole Enter
-- about 120,000), so it is read again only when the replication id changed: a replica
-- promoted to master takes a new one, and only a promotion makes a master that may run beside
-- an older one. (A master's epoch also rises when it takes a slot over from another master,
-- which then stops serving it: using the lower epoch read before is safe there.) These
-- survive from call to call on purpose; they are this node's, never replicated.
local node_epoch, node_replid

-- This master's failover epoch.
local function epoch()
  if not CLUSTER then
    return tonumber(epoch_arg)
  end
  -- (a plain find: the pattern match cost half as much again as INFO itself)
  local info = redis.call('INFO', 'replication')
  local at = string.find(info, 'master_replid:', 1, true)
  local replid = string.sub(info, at + 14, at + 53)
  if replid ~= node_replid then
    node_epoch = tonumber(string.match(redis.call('CLUSTER', 'INFO'), 'cluster_my_epoch:(%d+)'))
    node_replid = replid
  end
  return node_epoch
end

-- The id of a new leader after one with id `id`.
local function next_id(id)
  -- one Redis, or no failover yet: every instruction counts on the path of each new leader
  if epoch_arg == '0' and not CLUSTER then
    return id + 1
  end
  local first = epoch() * EPOCH_SPAN + 1
  if id + 1 > first then
    return id + 1
  end
  return first
end

-- The key of the election's `kind` beside its term ("history"), or of its bucket's when
-- `bucket` ("names").
local function beside(kind, bucket)
  if bucket then
    return string.sub(term_key, 1, #term_key - #election - 5) .. kind
  end
  return string.sub(term_key, 1, #term_key - 4) .. kind
end

-- Notes that the election, absent before this call, now exists: it is listed, and a history
-- left by its Delete is kept again.
local function born()
  redis.call('ZADD', beside('names', true), '0', election)
  redis.call('PERSIST', beside('history'))
end

-- How long the history of a deleted election stays (seconds): it outlives the Delete, which
-- it records, but not forever, so that elections of passing names leave nothing behind.
local DELETED_HISTORY_SECONDS = '2592000'

-- A history may grow this many lines past its length before it is trimmed back: one LTRIM
-- every so many changes instead of one with each (readers take only the length's newest).
local HISTORY_SLACK = 16

-- Records a change of leader: the new term id, the new leader (escaped; "" for none), the
-- Redis clock in ms and why, as one line "<id> <ms> <cause> <leader>" at the head of the
-- election's history, which keeps the last ARGV[8] (none when 0).
local function record(id, leader, why)
  if changes == '' then
    changes = why
  else
    changes = changes .. ' ' .. why
  end
  local len = tonumber(history_arg)
  if len <= 0 then
    return
  end
  local key = beside('history')
  if redis.call('LPUSH', key, string.format('%d %d %s %s', id, now_ms, why, leader)) > len + HISTORY_SLACK then
    redis.call('LTRIM', key, '0', len - 1)
  end
end

-- Stores and announces the changed state. A new id (`next_id`) when leadership passed to
-- another candidate.
local function commit()
  local id, rev = string.match(head, '^(%d+) (%d+)')
  id, rev = tonumber(id), tonumber(rev)
  local before, after = pieces()
  -- the new leader, when it changed ("" when the election is left without one)
  local lead
  -- the leader can only have changed when the list's first line was edited, or the list is
  -- no longer the stored one, or it was empty; then it is the first line of the first piece
  -- that has one
  if front ~= '' or at == from or body ~= raw or from > #body then
    local first = front
    if first == '' then
      first = before
      if first == '' then
        first = put
        if first == '' then
          first = after
          if first == '' then
            first = tail
          end
        end
      end
    end
    local new_leader = line_at(first, 1)
    if new_leader ~= stored_leader() then
      lead = new_leader
      if new_leader ~= '' then
        id = next_id(id)
      end
    end
  end
  if not raw then
    born()
  end
  -- one concatenation: the new term is the only string of its size this makes (the header's
  -- form goes by the list as it was: one change more or less does not matter)
  raw = header(id, math.max(rev + 1, now_us), #body) .. '\n' .. front .. before .. put .. after .. tail
  redis.call('SET', term_key, raw)
  redis.call(PUBLISH_COMMAND, channel, raw)
  if lead then
    record(id, lead, cause)
  end
end

-- Ends every operation: keep the lease index exact, commit when changed, then reply.
local function finish(status)
  reindex()
  if changed then
    commit()
  elseif raw == false then
    load()
  end
  return { status, raw or '0 0 0 0\n', expired + swept, changes }
end

-- Ends an Enter that appends `line` to an election of many candidates whose stored header
-- `stored` (its first line) is in the fixed form: the header is rewritten in place and
-- the line appended, so the list never passes through Lua; the one string of its size is the
-- term read back for the reply and the event. The leader stays (the election has candidates,
-- and nobody left in this call).
local function finish_append(stored, line)
  reindex()
  local id, rev = string.match(stored, '^(%d+) (%d+)')
  redis.call('SETRANGE', term_key, '0', header(tonumber(id), math.max(tonumber(rev) + 1, now_us), FIXED_FROM))
  redis.call('APPEND', term_key, line)
  raw = redis.call('GET', term_key)
  redis.call(PUBLISH_COMMAND, channel, raw)
  return { 'ok', raw, expired + swept, changes }
end

-- Ends client `c`'s candidacies in this bucket that stand on no lease of their own: those its
-- session held (HELD) and those whose lease ran out. Each removal is an ordinary change of its
-- election, published. `prefix` is the bucket's key prefix. Returns how many candidates left
-- (with any others whose lease ran out in the same elections); the call's own election is to
-- be opened again after.
local function end_candidacies(c, prefix)
  local n = 0
  local lo, hi = range_of(c)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', members_key, lo, hi)) do
    open(prefix, string.sub(m, #c + 2))
    local s = tonumber(redis.call('ZSCORE', lease_key, c))
    if not s then
      -- a membership that outlived its candidacy (one an older build removed): gone with it
      redis.call('ZREM', members_key, m)
    elseif s >= HELD or (s > 0 and s <= now_ms) then
      begin()
      -- expiry takes one whose lease ran out; one held by its session is taken here
      if is_candidate(c) then
        drop(c)
        expired = expired + 1
      end
      n = n + expired
      finish('ok')
    end
  end
  return n
end

-- Ends the bucket's sessions that ran out, and with them the candidacies they held: what every
-- call does first (before anything is read), so that no answer shows a candidate whose session
-- ended, and no session that ended is found running.
local function end_sessions()
  if ttl <= 0 then
    return
  end
  local first = redis.call('ZRANGE', sessions_key, '0', '0', 'WITHSCORES')
  if not first[2] or tonumber(first[2]) > now_ms then
    return
  end
  local ended = redis.call('ZRANGEBYSCORE', sessions_key, '-inf', now_ms)
  batched('ZREM', sessions_key, ended)
  -- the bucket's key prefix: KeepAlive (which is on no election: its name is "") passes it;
  -- an election's keys start with it
  local own = election ~= '' and election
  local prefix = bucket_arg
  if own then
    prefix = string.sub(term_key, 1, #term_key - #own - 5)
  end
  local n = 0
  for _, c in ipairs(ended) do
    n = n + end_candidacies(c, prefix)
  end
  index_sessions()
  if own then
    open(prefix, own)
    cause = own_cause
  else
    election = ''
  end
  swept = swept + n
end
