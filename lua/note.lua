-- note.lua: lists elections stored before their buckets' name sets were kept (what a replica
-- does once after an upgrade, with the names a SCAN found). An election deleted since the scan
-- is not brought back: only a name whose term exists now is added.
-- KEYS[1]: the bucket's names (see prelude.lua). ARGV[1]: the bucket's key prefix; ARGV[2..]:
-- names of elections of the bucket.
-- Returns how many names were added.
local added = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i] .. ':term') == 1 then
    added = added + redis.call('ZADD', KEYS[1], 'NX', '0', ARGV[i])
  end
end
return added
