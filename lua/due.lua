-- due.lua: the elections of one bucket with a lease due now on this Redis's clock (what the
-- sweepers poll on a Redis Cluster, where every master has its own clock). Reads only.
-- KEYS[1]: the bucket's lease index. ARGV[1]: most names to return.
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
