-- keepalive.lua: a KeepAlive on some buckets: the client's session in each runs for another
-- TTL, and holds every candidacy of the client in the bucket whose own lease runs out
-- meanwhile (see `expire` in prelude.lua). A session that ended is not resumed: sessions that
-- ran out are ended first (`end_sessions`), and a new session starts only after the client's
-- candidacies that ran out meanwhile are removed (each removal an ordinary change, published),
-- so nothing is brought back. A client that stands in no election of a bucket leaves nothing
-- behind there. With client "", only the ending of sessions that ran out: the sweepers' call
-- when a bucket's earliest session end is due.
-- KEYS: three for each bucket, as KEYS[1..3] in prelude.lua (one bucket on a Redis Cluster,
-- where each call stays in one hash slot; all of them on one Redis). ARGV[2]: the lease TTL;
-- ARGV[4]: the client; ARGV[7]: the epoch (see prelude.lua); ARGV[8..]: each bucket's key
-- prefix ("<prefix>:{e<b>}:").
-- Returns { elections the client stands in, over the buckets, candidates removed }.
local total = 0
for b = 1, #KEYS / 3 do
  if b > 1 then
    index_key, sessions_key, members_key = KEYS[3 * b - 2], KEYS[3 * b - 1], KEYS[3 * b]
    bucket_arg = ARGV[7 + b]
  end
  local n, had = 0, false
  if caller == '' then
    -- (the first bucket's sessions were ended before this file runs)
    if b > 1 then
      end_sessions()
    end
  else
    local lo, hi = range_of(caller)
    n = redis.call('ZLEXCOUNT', members_key, lo, hi)
    if n > 0 and ttl > 0 then
      if b > 1 then
        end_sessions()
      end
      had = redis.call('ZSCORE', sessions_key, caller)
      if not had then
        swept = swept + end_candidacies(caller, bucket_arg)
        election = ''
        n = redis.call('ZLEXCOUNT', members_key, lo, hi)
      end
    end
    if n > 0 and ttl > 0 then
      redis.call('ZADD', sessions_key, lease(), caller)
      -- a running session that did not end first leaves the bucket's earliest end as it was
      if not had or first_session == caller then
        index_sessions()
      end
    elseif redis.call('ZREM', sessions_key, caller) == 1 then
      index_sessions()
    end
  end
  total = total + n
end
return { total, swept }
