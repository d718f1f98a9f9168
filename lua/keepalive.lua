-- keepalive.lua: a KeepAlive on some buckets: the client's session in each runs for another
-- TTL, and holds every candidacy of the client in the bucket whose own lease runs out
-- meanwhile (see `expire` in prelude.lua). A session that ended is not resumed: a session of
-- the client that ran out is ended first, and a new session starts only after the client's
-- candidacies that ran out meanwhile are removed (each removal an ordinary change, published),
-- so nothing is brought back. A client that stands in no election of a bucket leaves nothing
-- behind there. With client "", only the ending of sessions that ran out: the sweepers' call
-- when a bucket's earliest session end is due.
-- KEYS: three for each bucket, as KEYS[1..3] in prelude.lua (one bucket on a Redis Cluster,
-- where each call stays in one hash slot; all of them on one Redis). ARGV[2]: the lease TTL;
-- ARGV[4]: the client; ARGV[7]: the epoch, ARGV[8] the history's length (see prelude.lua); ARGV[9..]: each bucket's key
-- prefix ("<prefix>:{e<b>}:").
-- Returns { elections the client stands in, over the buckets, candidates removed, the causes
-- of the changes of leader made (prelude.lua) }.
local total = 0
for b = 1, #KEYS / 3 do
  if b > 1 then
    index_key, sessions_key, members_key = KEYS[3 * b - 2], KEYS[3 * b - 1], KEYS[3 * b]
    bucket_arg = ARGV[8 + b]
  end
  local n, had = 0, false
  if caller == '' then
    -- (the first bucket's sessions were ended before this file runs)
    if b > 1 then
      end_sessions()
    end
  else
    -- Only the caller's own session is looked at here: ending every session of every bucket
    -- that ran out would make one KeepAlive carry the changes of every client gone meanwhile
    -- (thousands, for a client of thousands of elections), holding Redis for all of them.
    -- The sweepers end those one bucket per call, and any call on one of their elections
    -- ends its bucket's first.
    local lo, hi = range_of(caller)
    n = redis.call('ZLEXCOUNT', members_key, lo, hi)
    if n > 0 and ttl > 0 then
      had = redis.call('ZSCORE', sessions_key, caller)
      if had and tonumber(had) <= now_ms then
        -- its session here ran out and nobody has ended it yet: it ends now
        redis.call('ZREM', sessions_key, caller)
        index_sessions()
        had = false
      end
      if not had then
        -- its candidacies' changes must not show another session that ran out: those end
        -- first (rare: a session starts once, and the sweepers end ran-out ones in time)
        if b > 1 then
          end_sessions()
        end
        swept = swept + end_candidacies(caller, bucket_arg)
        election = ''
        n = redis.call('ZLEXCOUNT', members_key, lo, hi)
      end
    end
    if n > 0 and ttl > 0 then
      -- a running session that did not end first leaves the bucket's earliest end as it was
      local first = had and tonumber(redis.call('ZSCORE', index_key, ''))
      redis.call('ZADD', sessions_key, lease(), caller)
      if not had or not first or tonumber(had) <= first then
        index_sessions()
      end
    elseif redis.call('ZREM', sessions_key, caller) == 1 then
      index_sessions()
    end
  end
  total = total + n
end
return { total, swept, changes }
