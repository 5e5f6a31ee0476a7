-- The commit of one object on Redis (docs/format.md, "Redis"): read by the pure-Python
-- store (oaas_sdk/stores/redis.py) and compiled into the native one
-- (oprc-py/core/src/store/redis.rs, include_str!): one text, one SHA1.
local key = KEYS[1]
local found = redis.call('HGET', key, '@version') or '0'
if found ~= ARGV[1] then
  if found == ARGV[2] and redis.call('HGET', key, '@commit') == ARGV[5] then
    return {1, found}
  end
  return {0, found}
end
if ARGV[4] == 'd' then
  redis.call('DEL', key)
  return {1, '0'}
end
local n = tonumber(ARGV[6])
local args = {'@version', ARGV[2], '@updated', ARGV[3], '@commit', ARGV[5]}
if found == '0' then
  args[#args + 1] = '@created'
  args[#args + 1] = ARGV[3]
end
local i = 7
local last = 6 + 2 * n
while i <= last do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = ARGV[i + 1]
  i = i + 2
  if #args >= 1000 then
    redis.call('HSET', key, unpack(args))
    args = {}
  end
end
if #args > 0 then
  redis.call('HSET', key, unpack(args))
end
local dels = {}
for j = last + 1, #ARGV do
  dels[#dels + 1] = ARGV[j]
  if #dels >= 1000 then
    redis.call('HDEL', key, unpack(dels))
    dels = {}
  end
end
if #dels > 0 then
  redis.call('HDEL', key, unpack(dels))
end
return {1, ARGV[2]}
