#!lua flags=allow-cross-slot-keys
-- The commit of a batch of objects on Redis (docs/format.md, "Redis"): read by the
-- pure-Python store (oaas_sdk/stores/redis.py) and compiled into the native one
-- (oprc-py/core/src/store/redis.rs, include_str!): one text, one SHA1.
--
-- KEYS[1]: the hash of the first commit (it routes the call to its cluster node; every
-- hash the call touches lives on that node). ARGV[1]: the number of commits m; then per
-- commit: hash key, expected version, new version, time (ms), "w" (write) or "d"
-- (delete the object), commit token, number of entries n, number of deleted entries d,
-- then n (name, value) pairs and d names.
--
-- First every hash is read (HMGET @version @commit); a hash this node does not serve
-- (a stale slot map on a cluster) fails the call before anything is written, with an
-- error reply starting "OAASMOVED". Then the commits are applied in order, each one
-- version-checked: the reply holds two values per commit, {1, version now} when applied
-- (or already applied by this very commit: a resend; its token is written again), {0,
-- version found} on a version mismatch (nothing of that commit written).
local m = tonumber(ARGV[1])
local state = {}
local i = 2
for c = 1, m do
  local key = ARGV[i]
  if state[key] == nil then
    local r = redis.pcall('HMGET', key, '@version', '@commit')
    if type(r) == 'table' and r.err then
      if string.find(r.err, 'non local key', 1, true) or string.find(r.err, 'ASK', 1, true)
          or string.find(r.err, 'TRYAGAIN', 1, true) then
        return redis.error_reply('OAASMOVED ' .. r.err)
      end
      return redis.error_reply(r.err)
    end
    state[key] = {r[1] or '0', r[2]}
  end
  i = i + 8 + 2 * tonumber(ARGV[i + 6]) + tonumber(ARGV[i + 7])
end
local out = {}
i = 2
for c = 1, m do
  local key = ARGV[i]
  local expected, new, now, mode, token = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    ARGV[i + 5]
  local n, d = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  local first = i + 8
  i = first + 2 * n + d
  local s = state[key]
  local found = s[1]
  if found ~= expected then
    if found == new and s[2] == token then
      -- A resend of a commit that landed: rewriting its token (same bytes) puts a write
      -- in the replication stream, so that a WAIT after this call covers the commit.
      redis.call('HSET', key, '@commit', token)
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
    out[#out + 1] = found
  elseif mode == 'd' then
    redis.call('DEL', key)
    state[key] = {'0', false}
    out[#out + 1] = 1
    out[#out + 1] = '0'
  else
    local args = {'@version', new, '@updated', now, '@commit', token}
    if found == '0' then
      args[#args + 1] = '@created'
      args[#args + 1] = now
    end
    local j = first
    local last = first + 2 * n - 1
    while j <= last do
      args[#args + 1] = ARGV[j]
      args[#args + 1] = ARGV[j + 1]
      j = j + 2
      if #args >= 1000 then
        redis.call('HSET', key, unpack(args))
        args = {}
      end
    end
    if #args > 0 then
      redis.call('HSET', key, unpack(args))
    end
    local dels = {}
    for k = last + 1, last + d do
      dels[#dels + 1] = ARGV[k]
      if #dels >= 1000 then
        redis.call('HDEL', key, unpack(dels))
        dels = {}
      end
    end
    if #dels > 0 then
      redis.call('HDEL', key, unpack(dels))
    end
    state[key] = {new, token}
    out[#out + 1] = 1
    out[#out + 1] = new
  end
end
return out
