-- keepalive.lua: one bucket's part of a KeepAlive: the client's session in this bucket runs
-- for another TTL, which keeps it a candidate of every election of the bucket it stands in
-- (see `expire` in prelude.lua). A session that had already ended is not resumed: what ran out
-- while it was gone is removed first (each removal an ordinary change, published), so nothing
-- is brought back. A client that stands in no election of the bucket leaves nothing behind.
-- KEYS[1..3]: the bucket's (see prelude.lua). ARGV[2]: the lease TTL; ARGV[4]: the client;
-- ARGV[7]: the epoch (see prelude.lua); ARGV[8]: the bucket's key prefix ("<prefix>:{e<b>}:").
-- Returns the number of elections of the bucket the client stands in.
local prefix = ARGV[8]
local lo, hi = range_of(caller)
local n = redis.call('ZLEXCOUNT', members_key, lo, hi)
if n > 0 and ttl > 0 then
  local ends_at = tonumber(redis.call('HGET', sessions_key, caller))
  if not ends_at or ends_at <= now_ms then
    for _, m in ipairs(redis.call('ZRANGEBYLEX', members_key, lo, hi)) do
      open(prefix, string.sub(m, #caller + 2))
      begin()
      finish('ok')
    end
    n = redis.call('ZLEXCOUNT', members_key, lo, hi)
  end
end
if n == 0 or ttl <= 0 then
  redis.call('HDEL', sessions_key, caller)
  return n
end
redis.call('HSET', sessions_key, caller, lease())
return n
