-- list.lua: one bucket's share of a listing (ElectionAdmin.List). Reads only.
-- KEYS[1]: the bucket's names (see prelude.lua). ARGV[1]: the bucket's key prefix; ARGV[2]: the
-- name prefix; ARGV[3]: the name to go on after ("": from the first); ARGV[4]: most elections;
-- ARGV[5]: the last byte of each term to read first (enough for its header and most leaders).
-- Returns, for each election in name order, three items: its name, the start of its term up to
-- its leader's line feed at least (all of it when it is shorter, or was stored by an earlier
-- version as JSON; "" when it has none), and how many candidates it has. The names are a lexicographic range, so the work is bounded by ARGV[4].
local bucket, prefix, after = ARGV[1], ARGV[2], ARGV[3]
local lo = '[' .. prefix
if after ~= '' then
  lo = '(' .. after
end
-- names are UTF-8, in which no byte is 255
local hi = '+'
if prefix ~= '' then
  hi = '(' .. prefix .. '\255'
end
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], lo, hi, 'LIMIT', '0', ARGV[4])) do
  local term = bucket .. name .. ':term'
  local head = redis.call('GETRANGE', term, '0', ARGV[5])
  if string.byte(head, 1) == 123 then
    head = redis.call('GET', term)
  elseif #head > tonumber(ARGV[5]) then
    -- cut within the leader's line: a long leader id, read whole
    local nl = string.find(head, '\n', 1, true)
    if nl and not string.find(head, '\n', nl + 1, true) then
      head = redis.call('GET', term)
    end
  end
  out[#out + 1] = name
  out[#out + 1] = head
  out[#out + 1] = redis.call('ZCARD', bucket .. name .. ':leases')
end
return out
