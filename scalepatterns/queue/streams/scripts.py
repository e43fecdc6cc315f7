"""The Lua scripts of the Redis Streams brokers, and the flows that run them.

Each move of a message is one script, so it happens whole or not at all: publishing
(into a stream, or into the delay set), fetching (due delayed messages into the
stream, messages of dead consumers reclaimed, new ones read), acknowledging (XACK and
XDEL together), giving back and dead-lettering. A script touches the keys of one queue
only (one Cluster slot, see `keys.py`). The flows (see `steps.py`) run a script with
EVALSHA and load it after a NOSCRIPT (a restarted or failed-over server), or run several
in one pipeline; `drive` runs them on a sync client, `adrive` on a ``redis.asyncio`` one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scalepatterns._deps import require
from scalepatterns._steps import Flow

__all__ = [
    "ACK",
    "Call",
    "DEAD",
    "DECLARE",
    "DEPTH",
    "FETCH",
    "FORGET",
    "GIVE_BACK",
    "PUBLISH",
    "PUBLISH_NOW",
    "Script",
    "run",
    "run_all",
]


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324 - Redis names scripts by SHA1


Call = tuple[Script, Sequence[str], Sequence[Any]]
"""One script call: the script, its keys, its arguments."""

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A delayed message is a member of the delay set: "<token>:<priority>:<body length>:"
# followed by the body and the meta (the token, random, keeps equal messages apart).
# KEYS[2] is the delay set, KEYS[3..] the streams of priority 0, 1, ...: messages due by
# `now` move into their stream, oldest first, at most 500 per call.
_PROMOTE = (
    _NOW
    + """
local function promote(now)
  local levels = #KEYS - 2
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 500)
  for _, member in ipairs(due) do
    local a = string.find(member, ':', 1, true)
    local b = string.find(member, ':', a + 1, true)
    local c = string.find(member, ':', b + 1, true)
    local level = math.min(tonumber(string.sub(member, a + 1, b - 1)), levels - 1)
    local size = tonumber(string.sub(member, b + 1, c - 1))
    local body = string.sub(member, c + 1, c + size)
    local meta = string.sub(member, c + size + 1)
    redis.call('XADD', KEYS[3 + level], '*', 'b', body, 'm', meta)
    redis.call('ZREM', KEYS[2], member)
  end
end
"""
)

PUBLISH = Script(
    "publish",
    _NOW
    + """
-- KEYS: meta, delay set, streams by priority; ARGV: 5 per message:
-- delay ms (0: now), priority, token (makes the delayed member unique), body, meta.
-- Returns how many were stored, or -1 when the queue does not exist (none stored).
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local top = tonumber(redis.call('HGET', KEYS[1], 'x-max-priority') or '0') or 0
top = math.min(top, #KEYS - 3)
local now = nil
for i = 1, #ARGV, 5 do
  local level = math.min(tonumber(ARGV[i + 1]), top)
  local delay = tonumber(ARGV[i])
  if delay > 0 then
    now = now or now_ms()
    local member = ARGV[i + 2] .. ':' .. level .. ':' .. #ARGV[i + 3] .. ':' .. ARGV[i + 3]
                   .. ARGV[i + 4]
    redis.call('ZADD', KEYS[2], now + delay, member)
  else
    redis.call('XADD', KEYS[3 + level], '*', 'b', ARGV[i + 3], 'm', ARGV[i + 4])
  end
end
return #ARGV / 5
""",
)

PUBLISH_NOW = Script(
    "publish_now",
    """
-- PUBLISH for messages of priority 0 due now, the common case: fewer arguments.
-- KEYS: meta, the stream; ARGV: body and meta of each message.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 1, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[i], 'm', ARGV[i + 1])
end
return #ARGV / 2
""",
)

FETCH = Script(
    "fetch",
    _PROMOTE
    + """
-- KEYS: meta, delay set, streams by priority.
-- ARGV: group, consumer, count, reclaim min-idle ms (0: no reclaim), recover (1: the
-- consumer's own pending entries first, after a lost reply).
-- Returns {entries, wake ids, ms until the next delayed message is due (-1: none)}.
-- Entries are flat, three values each: "<priority>:<redelivered 0|1>:<entry id>", the
-- body, the meta (the reply stays small: redis-py parses it value by value). Wake ids
-- (one per stream) are where a blocking XREAD waits from when fewer than `count` were
-- found. {{}, {}, -2}: the queue does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return {{}, {}, -2} end
local group, consumer = ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local reclaim = tonumber(ARGV[4])
local levels = #KEYS - 2
local now = now_ms()
promote(now)
local out = {}
-- XREADGROUP's entries of its one stream ({{stream, entries}}; fakeredis, which the unit
-- tests and the docs' samples run on, answers {stream, entries}).
local function read_entries(reply)
  if not reply then return {} end
  if type(reply[1]) == 'table' then return reply[1][2] or {} end
  return reply[2] or {}
end
-- Consumers that hold nothing and were idle for `idle` ms (killed workers) leave the group.
local function forget_idle(stream, group, consumer, idle)
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields['pending'] == 0 and fields['idle'] > idle and fields['name'] ~= consumer then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, fields['name'])
    end
  end
end
local function emit(level, redelivered, entry)
  local body, meta = '', ''
  local fields = entry[2]
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'b' then body = fields[i + 1]
    elseif name == 'm' then meta = fields[i + 1]
    elseif name == 'r' then redelivered = 1 end
  end
  out[#out + 1] = level .. ':' .. redelivered .. ':' .. entry[1]
  out[#out + 1] = body
  out[#out + 1] = meta
end
if ARGV[5] == '1' then
  for level = levels - 1, 0, -1 do
    local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'STREAMS', KEYS[3 + level], '0')
    for _, e in ipairs(read_entries(r)) do
      if e[2] then emit(level, 1, e) end
    end
  end
end
if reclaim > 0 then
  for level = levels - 1, 0, -1 do
    forget_idle(KEYS[3 + level], group, consumer, math.max(3600000, 10 * reclaim))
    if count <= 0 then break end
    local r = redis.call('XAUTOCLAIM', KEYS[3 + level], group, consumer, reclaim, '0-0',
                         'COUNT', count)
    for _, e in ipairs(r[2] or {}) do
      if e[2] then
        emit(level, 1, e)
        count = count - 1
      end
    end
  end
end
for level = levels - 1, 0, -1 do
  if count <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count,
                       'STREAMS', KEYS[3 + level], '>')
  for _, e in ipairs(read_entries(r)) do
    emit(level, 0, e)
    count = count - 1
  end
end
local wake = {}
local due = -1
if count > 0 then
  for level = 0, levels - 1 do
    local last = '$'
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[3 + level])) do
      local fields = {}
      for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
      if fields['name'] == group then last = fields['last-delivered-id'] end
    end
    wake[#wake + 1] = last
  end
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[2] then due = math.max(0, tonumber(first[2]) - now) end
end
return {out, wake, due}
""",
)

DEPTH = Script(
    "depth",
    _PROMOTE
    + """
-- KEYS: meta, delay set, streams by priority; ARGV: group.
-- Messages not yet delivered to any consumer: each stream's length minus its entries
-- pending (delivered, not acknowledged; acknowledged ones are deleted).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
promote(now_ms())
local total = 0
for i = 3, #KEYS do
  local length = redis.call('XLEN', KEYS[i])
  if length > 0 then
    local pending = redis.pcall('XPENDING', KEYS[i], ARGV[1])
    if type(pending) == 'table' and pending[1] then length = length - pending[1] end
    total = total + length
  end
end
return total
""",
)

ACK = Script(
    "ack",
    """
-- KEYS: a stream; ARGV: group, ids. Acknowledged entries are deleted at once: a stream
-- holds only messages not yet delivered or not yet acknowledged, and nothing else
-- ever trims it.
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return n
""",
)

# An entry is moved only while `consumer` still holds it: once another consumer reclaimed
# it (this one was too slow), that one decides its fate.
_OWNED = """
local function owned(stream, group, consumer, id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  return p[1] ~= nil and p[1][2] == consumer
end
local function take(stream, group, id)
  local e = redis.call('XRANGE', stream, id, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  if e[1] then return e[1][2] end
  return nil
end
"""

GIVE_BACK = Script(
    "give_back",
    _OWNED
    + """
-- KEYS: a stream; ARGV: group, consumer, ids. Each entry still held by `consumer` goes
-- back to the stream's tail as a new entry flagged redelivered (field r), so waiting
-- consumers see it at once.
local n = 0
for i = 3, #ARGV do
  if owned(KEYS[1], ARGV[1], ARGV[2], ARGV[i]) then
    local fields = take(KEYS[1], ARGV[1], ARGV[i])
    if fields then
      local flagged = false
      for j = 1, #fields, 2 do if fields[j] == 'r' then flagged = true end end
      if not flagged then
        fields[#fields + 1] = 'r'
        fields[#fields + 1] = '1'
      end
      redis.call('XADD', KEYS[1], '*', unpack(fields))
    end
    n = n + 1
  end
end
return n
""",
)

DEAD = Script(
    "dead",
    _OWNED
    + """
-- KEYS: a stream, the dead-letter queue's meta and stream; ARGV: group, consumer, ids.
-- Each entry still held by `consumer` moves to the dead-letter stream (dropped when
-- there is none, as RabbitMQ drops a message rejected without a dead-letter queue).
local exists = redis.call('EXISTS', KEYS[2]) == 1
local n = 0
for i = 3, #ARGV do
  if owned(KEYS[1], ARGV[1], ARGV[2], ARGV[i]) then
    local fields = take(KEYS[1], ARGV[1], ARGV[i])
    if fields and exists then
      local kept = {}
      for j = 1, #fields, 2 do
        if fields[j] ~= 'r' then
          kept[#kept + 1] = fields[j]
          kept[#kept + 1] = fields[j + 1]
        end
      end
      redis.call('XADD', KEYS[3], '*', unpack(kept))
    end
    n = n + 1
  end
end
return n
""",
)

DECLARE = Script(
    "declare",
    """
-- KEYS: meta, dead-letter meta, dead-letter stream, streams by priority.
-- ARGV: group, then the queue's arguments and the dead-letter queue's, each as a count
-- followed by name/value pairs. Returns {} once both exist with these arguments, or
-- {1 (queue) or 2 (dead-letter queue), argument, current, declared} on a conflict
-- ('' for an absent argument); nothing is changed then.
local function wanted(at)
  local n = tonumber(ARGV[at])
  local want = {}
  for i = 1, n do want[ARGV[at + 2 * i - 1]] = ARGV[at + 2 * i] end
  return want, at + 2 * n + 1
end
local function conflict(key, want)
  if redis.call('EXISTS', key) == 0 then return nil end
  local have = {}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do have[flat[i]] = flat[i + 1] end
  local names = {}
  for k in pairs(want) do names[#names + 1] = k end
  for k in pairs(have) do if want[k] == nil then names[#names + 1] = k end end
  table.sort(names)
  for _, k in ipairs(names) do
    if want[k] ~= have[k] then return {k, have[k] or '', want[k] or ''} end
  end
  return nil
end
local function store(key, want)
  for k, v in pairs(want) do redis.call('HSET', key, k, v) end
end
local queue, next_at = wanted(2)
local dead = wanted(next_at)
local found = conflict(KEYS[1], queue)
if found then return {1, found[1], found[2], found[3]} end
found = conflict(KEYS[2], dead)
if found then return {2, found[1], found[2], found[3]} end
store(KEYS[1], queue)
store(KEYS[2], dead)
for i = 3, #KEYS do redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[1], '0', 'MKSTREAM') end
return {}
""",
)


FORGET = Script(
    "forget",
    """
-- KEYS: a queue's streams; ARGV: group, consumer. The closed consumer leaves the group
-- where it holds nothing (else its entries stay pending, for another to take over).
local n = 0
for i = 1, #KEYS do
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[i], ARGV[1])) do
    local fields = {}
    for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
    if fields['name'] == ARGV[2] and fields['pending'] == 0 then
      n = n + redis.call('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[1], ARGV[2])
    end
  end
end
return n
""",
)


def _redis_errors() -> Any:
    return require("redis.exceptions", extra="redis", feature="RedisStreamsBroker")


def _evalsha(script: Script, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def run(client: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Flow[Any]:
    """Run `script` on `client`; load it first if the server does not know it."""
    try:
        return (yield client.execute_command, _evalsha(script, keys, args))
    except _redis_errors().NoScriptError:
        yield client.script_load, (script.source,)
        return (yield client.execute_command, _evalsha(script, keys, args))


def run_all(
    client: Any, calls: Sequence[Call], wait: tuple[int, int] | None = None
) -> Flow[tuple[list[Any], int | None]]:
    """Run `calls` in one pipeline (on a Cluster, redis-py sends each to its slot's
    node); return their results, a call's error in its place, and with `wait`
    (replicas, ms) the replicas that acknowledged the writes (WAIT, on the same
    connection). A lost connection raises."""
    errors = _redis_errors()
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.execute_command(*_evalsha(script, keys, args))
    if wait is not None:
        pipe.execute_command("WAIT", *wait)
    results: list[Any] = list((yield pipe.execute, (False,)))
    replicas = int(results.pop()) if wait is not None else None
    unknown = [i for i, r in enumerate(results) if isinstance(r, errors.NoScriptError)]
    if unknown:  # the server lost its scripts (restart, failover): load, run those again
        for script in {calls[i][0] for i in unknown}:
            yield client.script_load, (script.source,)
        again, replicas_again = yield from run_all(client, [calls[i] for i in unknown], wait)
        for i, result in zip(unknown, again, strict=True):
            results[i] = result
        if replicas is not None and replicas_again is not None:
            replicas = min(replicas, replicas_again)
    return results, replicas
