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
-- version-checked. A commit whose expected version is not the stored one writes nothing
-- and is a conflict, unless it is a resend of a call that landed (the stored token is
-- this commit's or that of a later commit of the same object in this call): then it
-- counts as applied and the token is written again (the same bytes: a write in the
-- replication stream, so that a WAIT after this call covers the commit). The reply lists
-- the conflicts only: {commit number (1-based), version found, ...}; empty when every
-- commit applied.
local m = tonumber(ARGV[1])
local version, token = {}, {}
local sent = {} -- commit token -> index in ARGV of that commit
local i = 2
for _ = 1, m do
  local key = ARGV[i]
  sent[ARGV[i + 5]] = i
  if version[key] == nil then
    local r = redis.pcall('HMGET', key, '@version', '@commit')
    if r.err then
      if string.find(r.err, 'non local key', 1, true) or string.find(r.err, 'ASK', 1, true)
          or string.find(r.err, 'TRYAGAIN', 1, true) then
        return redis.error_reply('OAASMOVED ' .. r.err)
      end
      return redis.error_reply(r.err)
    end
    version[key] = r[1] or '0'
    token[key] = r[2]
  end
  i = i + 8 + 2 * tonumber(ARGV[i + 6]) + tonumber(ARGV[i + 7])
end
local out = {}
i = 2
for c = 1, m do
  local at = i
  local key, expected, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local n, d = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  local first = i + 8
  i = first + 2 * n + d
  local found = version[key]
  if found ~= expected then
    local stored = token[key]
    local landed = stored and sent[stored]
    if landed and landed >= at and ARGV[landed] == key and ARGV[landed + 2] == found then
      redis.call('HSET', key, '@commit', stored)
    else
      out[#out + 1] = c
      out[#out + 1] = found
    end
  elseif ARGV[at + 4] == 'd' then
    redis.call('DEL', key)
    version[key] = '0'
    token[key] = false
  else
    local now, tok = ARGV[at + 3], ARGV[at + 5]
    if n == 1 then
      if found == '0' then
        redis.call('HSET', key, '@version', new, '@updated', now, '@commit', tok,
          '@created', now, ARGV[first], ARGV[first + 1])
      else
        redis.call('HSET', key, '@version', new, '@updated', now, '@commit', tok,
          ARGV[first], ARGV[first + 1])
      end
    else
      local args = {'@version', new, '@updated', now, '@commit', tok}
      local k = 7
      if found == '0' then
        args[7] = '@created'
        args[8] = now
        k = 9
      end
      local j = first
      local last = first + 2 * n - 1
      while j <= last do
        args[k] = ARGV[j]
        args[k + 1] = ARGV[j + 1]
        k = k + 2
        j = j + 2
        if k > 1000 then
          redis.call('HSET', key, unpack(args, 1, k - 1))
          args = {}
          k = 1
        end
      end
      if k > 1 then
        redis.call('HSET', key, unpack(args, 1, k - 1))
      end
    end
    if d > 0 then
      local dels = {}
      local k = 1
      for j = first + 2 * n, i - 1 do
        dels[k] = ARGV[j]
        k = k + 1
        if k > 1000 then
          redis.call('HDEL', key, unpack(dels, 1, k - 1))
          dels = {}
          k = 1
        end
      end
      if k > 1 then
        redis.call('HDEL', key, unpack(dels, 1, k - 1))
      end
    end
    version[key] = new
    token[key] = tok
  end
end
return out
