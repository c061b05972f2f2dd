import { createHash } from 'node:crypto';

/**
 * The Lua scripts of {@link RedisCloudStore}. Each runs atomically in Redis: a batch and its ledger entry, a
 * mutation's effect and its stored outcome, a change and its sequence number are written by one script, so no other
 * node ever sees half of one, and a node killed mid-request leaves either all of it or nothing.
 *
 * Every key a script writes is passed in KEYS; the pull script also reads the record hashes it finds in the change
 * index, which share the store's prefix (and so its hash tag, under Redis Cluster).
 */

/** A script and its SHA1, for EVALSHA with a fallback to EVAL after a SCRIPT FLUSH or a restart of Redis. */
export interface LuaScript {
  readonly source: string;
  readonly sha: string;
}

const script = (source: string): LuaScript => ({ source, sha: createHash('sha1').update(source).digest('hex') });

/**
 * Helpers shared by the record scripts. Integers go into strings with `%d`: Lua's own number formatting switches
 * to exponents past 14 digits. Stamps are compared as numbers, part by part: Redis sets LC_COLLATE from the
 * environment, so Lua's string comparison is the locale's, not byte order.
 */
const RECORD_HELPERS = `
local function int(n) return string.format('%d', n) end

local function later(a, b)
  local ams, bms = tonumber(string.sub(a, 1, 15)), tonumber(string.sub(b, 1, 15))
  if ams ~= bms then return ams > bms end
  return tonumber(string.sub(a, 17)) > tonumber(string.sub(b, 17))
end

-- Writes a record's new state under the next change sequence number; a tombstone keeps no value.
-- keys: record, change-seq, changes, hlc-high, record-counts. prev: the HMGET of version, deleted before.
-- known: the device that wrote exactly this state and was told this version, or '' (kept with the version in
-- known-by and known-at, which the pull script checks against the record's version).
local function write(keys, member, deleted, value, version, hlc, origin, prev, known)
  local seq = redis.call('INCR', keys[2])
  if deleted then
    redis.call('HDEL', keys[1], 'value')
    redis.call('HSET', keys[1], 'deleted', '1', 'version', int(version), 'hlc', hlc, 'origin', origin, 'seq', int(seq))
  else
    redis.call('HSET', keys[1], 'value', value, 'deleted', '0', 'version', int(version), 'hlc', hlc,
      'origin', origin, 'seq', int(seq))
  end
  if known == '' then
    redis.call('HDEL', keys[1], 'known-by', 'known-at')
  else
    redis.call('HSET', keys[1], 'known-by', known, 'known-at', int(version))
  end
  redis.call('ZADD', keys[3], int(seq), member)
  local high = redis.call('GET', keys[4])
  if not high or later(hlc, high) then redis.call('SET', keys[4], hlc) end
  local was = prev[1] and (prev[2] == '1' and 'tombstones' or 'records') or nil
  local now = deleted and 'tombstones' or 'records'
  if was ~= now then
    if was then redis.call('HINCRBY', keys[5], was, -1) end
    redis.call('HINCRBY', keys[5], now, 1)
  end
end
`;

/**
 * Stores a batch with its ledger entry, or answers from the ledger.
 * KEYS: ledger entry, point-id counter, points stream, batch index, the device's batch index, stats, device stats.
 * ARGV: hash, ack JSON, deviceId, replicaId, receivedAt ms, point count, points JSON.
 * Returns `{'stored', ack}`, `{'replayed', ack}` or `{'conflict'}`.
 */
export const INGEST = script(`
local stored = redis.call('HMGET', KEYS[1], 'hash', 'ack')
if stored[1] then
  if stored[1] ~= ARGV[1] then return {'conflict'} end
  redis.call('HINCRBY', KEYS[1], 'replays', 1)
  redis.call('HINCRBY', KEYS[6], 'replays', 1)
  redis.call('HINCRBY', KEYS[7], 'replays', 1)
  return {'replayed', stored[2]}
end
local n = tonumber(ARGV[6])
if n > 0 then
  local last = redis.call('INCRBY', KEYS[2], n)
  local first = string.format('%d', last - n + 1)
  last = string.format('%d', last)
  redis.call('XADD', KEYS[3], first .. '-0', 'd', ARGV[3], 'r', ARGV[4], 't', ARGV[5], 'p', ARGV[7])
  redis.call('ZADD', KEYS[4], last, first)
  redis.call('ZADD', KEYS[5], last, first)
  redis.call('HINCRBY', KEYS[6], 'points', n)
  redis.call('HINCRBY', KEYS[7], 'points', n)
end
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'ack', ARGV[2], 'device', ARGV[3], 'at', ARGV[5], 'replays', '0')
redis.call('HINCRBY', KEYS[6], 'batches', 1)
redis.call('HINCRBY', KEYS[7], 'batches', 1)
return {'stored', ARGV[2]}
`);

/**
 * Counts a replay answered from the ledger. KEYS: ledger entry, stats, device stats. Nothing when the entry is gone.
 */
export const NOTE_REPLAY = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('HINCRBY', KEYS[2], 'replays', 1)
redis.call('HINCRBY', KEYS[3], 'replays', 1)
return 1
`);

/**
 * Decides one mutation and stores its outcome under its mid, atomically.
 * KEYS: outcome (mid), record, change-seq, changes, hlc-high, record-counts.
 * ARGV: kind ('put' | 'delete' | 'reject'), the outcome JSON when applied (or rejected), baseVersion, value JSON,
 * hlc, origin, change member, the conflict outcome's JSON up to `current`, the current record's JSON up to
 * `value`, the never-existed record's JSON, the device that will know the applied state ('' when restamped).
 * Returns the outcome JSON: the stored one for a mid seen before.
 */
export const PUSH_MUTATION = script(`${RECORD_HELPERS}
local stored = redis.call('GET', KEYS[1])
if stored then return stored end
if ARGV[1] == 'reject' then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
local cur = redis.call('HMGET', KEYS[2], 'version', 'deleted', 'value', 'hlc', 'origin')
local base = tonumber(ARGV[3])
if (tonumber(cur[1]) or 0) == base then
  write({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, ARGV[7], ARGV[1] == 'delete', ARGV[4], base + 1, ARGV[5],
    ARGV[6], cur, ARGV[11])
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
local current = ARGV[10]
if cur[1] then
  current = ARGV[9] .. (cur[3] or 'null') .. ',"deleted":' .. (cur[2] == '1' and 'true' or 'false') ..
    ',"version":' .. cur[1] .. ',"hlc":' .. cjson.encode(cur[4]) .. ',"origin":' .. cjson.encode(cur[5]) .. '}'
end
local result = ARGV[8] .. current .. '}'
redis.call('SET', KEYS[1], result)
return result
`);

/**
 * A cloud-side edit, unconditional: the next version. KEYS: record, change-seq, changes, hlc-high, record-counts.
 * ARGV: deleted ('1' | '0'), value JSON, hlc, origin, change member. Returns the new version.
 */
export const EDIT_RECORD = script(`${RECORD_HELPERS}
local cur = redis.call('HMGET', KEYS[1], 'version', 'deleted')
local version = (tonumber(cur[1]) or 0) + 1
write(KEYS, ARGV[5], ARGV[1] == '1', ARGV[2], version, ARGV[3], ARGV[4], cur, '')
return version
`);

/**
 * One consistent page of changes after a cursor: each record in its latest state, read in the same atomic step as
 * the index, so a page never shows a record at a newer state than its place in the index says. It returns up to
 * `limit` changes and leaves out those the requester holds (written by its replica (origin) as its device was told,
 * still at that version), which do not count toward `limit` but toward `scan`: the page looks at `scan` changes at
 * most, so the script's work stays bounded. It reads the index a slice at a time (at least 64 ids, so that a small
 * limit does not cost a call per change) and stops at the change after its last, which it does not consume: past a
 * full page, or past the scan bound. Without a requester, `scan` is `limit`: one slice, as a page always read.
 * KEYS: changes. ARGV: cursor, limit, record key prefix, requester's device id and replica id ('' for none), scan.
 * Returns `{hasMore (1 | 0), cursor, changes}`, `cursor` the seq of the last change consumed (or the one given), per
 * change: member, value (or false), deleted, version, hlc, origin, seq.
 */
export const PULL_CHANGES = script(`
local limit, scan = tonumber(ARGV[2]), tonumber(ARGV[6])
local device, replica = ARGV[4], ARGV[5]
if device == '' then scan = limit end
local cursor, out, looked = ARGV[1], {}, 0
while true do
  local want = 0
  if #out < limit then want = math.min(scan - looked, math.max(limit, 64)) end
  -- One id more than the page may consume, which shows whether any remain; the scores are the cursor.
  local ids = redis.call('ZRANGE', KEYS[1], '(' .. cursor, '+inf', 'BYSCORE', 'LIMIT', 0, want + 1, 'WITHSCORES')
  for i = 1, #ids, 2 do
    if #out == limit or looked == scan then return {1, cursor, out} end
    local id = ids[i]
    local r = redis.call('HMGET', ARGV[3] .. id, 'deleted', 'version', 'hlc', 'origin', 'seq', 'known-by', 'known-at')
    looked = looked + 1
    cursor = ids[i + 1]
    if device == '' or r[4] ~= replica or r[6] ~= device or r[7] ~= r[2] then
      out[#out + 1] = {id, redis.call('HGET', ARGV[3] .. id, 'value') or false, r[1], r[2], r[3], r[4], r[5]}
    end
  end
  if #ids <= 2 * want then return {0, cursor, out} end
end
`);

/**
 * Takes one token from a key's rate bucket: the in-process `RateLimiter`'s arithmetic, in the same order, on the
 * same doubles, so that both answer alike. The time is the server's (`now`), not Redis's: a clock a test injects
 * works, and a step backwards refills nothing. The bucket expires once it would be full again, so that an idle key
 * costs nothing: an expired bucket and a full one answer alike. The expiry runs on Redis's clock, hence its floor of
 * a minute (a bucket must not vanish early because the server's clock runs slower than Redis's, as a test's does),
 * and its ceiling of a week (a tiny rate would ask for more than PEXPIRE takes; such a key gets a full bucket
 * after a week idle).
 * KEYS: bucket. ARGV: now ms, requests per second, burst.
 * Returns `{1}` when allowed, else `{0, retry after in whole seconds}`.
 */
export const TAKE_TOKEN = script(`
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
else
  local elapsed = math.max(0, now - at) / 1000
  at = math.max(at, now)
  tokens = math.min(burst, tokens + elapsed * rate)
end
local allowed = tokens >= 1
if allowed then tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
local ttl = math.min(604800000, math.max(60000, math.ceil((burst - tokens) / rate * 1000)))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
if allowed then return {1} end
return {0, math.max(1, math.ceil((1 - tokens) / rate))}
`);
