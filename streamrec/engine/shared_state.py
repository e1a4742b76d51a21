"""Model state shared through Redis: the blend's item side, per-user state, applied offsets.

Redis is the parameter server. A worker keeps a hot local copy (the :class:`Blend` itself);
after each batch it writes back, in one MULTI/EXEC pipeline, the increments and vectors the
batch changed, the state of every user it touched, and the highest offset applied per
partition. Because the offsets land atomically with the state, a replayed event (Faust is
at-least-once) is recognised and not applied twice. Counters are Redis increments, so several
workers can add to them; vectors are last-writer-wins, which SGD tolerates.

Keys (``{p}`` is the prefix, ``streamrec`` by default)::

    {p}:pop:{epoch}        hash item -> decayed count (raw, relative to the epoch)
    {p}:item-clicks        hash item -> clicks (never decayed)
    {p}:item-events        hash item -> views and clicks (never decayed)
    {p}:co:{item}          zset neighbour -> co-visitation weight (raw, relative to the epoch)
    {p}:co-epoch           the co-visitation epoch
    {p}:isgd               hash item -> float32 latent vector bytes
    {p}:changed            zset item -> when its counts or vector last changed (what other
                           workers pull)
    {p}:items              hash item -> JSON metadata (uploads)
    {p}:items:ts           zset item -> first-seen time
    {p}:retired            hash item -> JSON retirement (ts, reason, when processed): the items
                           retired, whose other keys are dropped
    {p}:items:added        list of the items in the order they were registered, which other
                           workers read on from where they stopped
    {p}:emb:{version}      hash item -> float16 content embedding (see content.embedding_cache)
    {p}:user:{user}        JSON user state (recent items, activity, latent vector, content
                           and tag profiles), expiring after ``user_ttl_s`` without events
    {p}:seen:{user}        list of the items the user viewed or clicked, oldest first (the
                           latest ``max_seen`` at least), appended to, never rewritten; same
                           expiry
    {p}:clicked:{user}     list of the items the user clicked, the same way
    {p}:offsets            hash "topic:partition" -> last applied offset
    {p}:ranker             JSON ranker state (weights and scaler statistics)
    {p}:stats              hash of counters (events, recommendations, dead letters)
    {p}:state-id           random id created with the state: its absence means the state is gone
"""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Iterable

import numpy as np
import orjson
import redis.asyncio as aioredis

from streamrec.content.embedding_cache import EmbeddingCache
from streamrec.models.blend import Blend
from streamrec.models.popularity import EPOCH_HALF_LIVES, epoch_of
from streamrec.records.errors import StateLost

#: Users whose state a worker keeps in memory by default; the least recently active beyond
#: it are dropped and reloaded from Redis when they return (~11 KB each in the model process,
#: most of it the candidates and features of their latest list, which the ranker learns from).
MAX_USERS = 100_000
#: How far apart two workers' clocks (and a write-back's stamp and its landing) may be: items
#: changed this long before a worker's last pull are pulled again.
CLOCK_MARGIN_S = 10.0
#: How long a user's state stays in Redis after their last event by default (30 days).
USER_TTL_S = 30 * 86400.0

#: Writes the state of a batch's users in one round trip: the small JSON part whole, what they
#: saw and clicked as a delta, so a user with a long history costs the same as a new one.
#: ARGV: prefix, max seen, TTL in seconds (0: none), JSON [[user, [seen...], [clicked...]], ...],
#: then one JSON state per user. Lists, which Redis keeps compact (a sorted set and a set took
#: 4.5x the memory); a resend after a failed write may repeat items, which reading ignores.
#: Past twice ``max seen`` entries a list keeps its latest ``max seen``.
WRITE_USERS = """
local p, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for n, d in ipairs(cjson.decode(ARGV[4])) do
  local user = d[1]
  local key = p .. ":user:" .. user
  if ttl > 0 then
    redis.call("SET", key, ARGV[4 + n], "EX", ttl)
  else
    redis.call("SET", key, ARGV[4 + n])
  end
  for part, kind in ipairs({"seen", "clicked"}) do
    local lkey, items = p .. ":" .. kind .. ":" .. user, d[part + 1]
    for i = 1, #items, 1000 do
      redis.call("RPUSH", lkey, unpack(items, i, math.min(i + 999, #items)))
    end
    if #items > 0 and redis.call("LLEN", lkey) > 2 * cap then
      redis.call("LTRIM", lkey, -cap, -1)
    end
    if ttl > 0 then redis.call("EXPIRE", lkey, ttl) end
  end
end
return 1
"""

#: Reads users' states: for each user in ARGV[2..], {JSON state or false, seen items oldest
#: first, clicked items}.
READ_USERS = """
local p, out = ARGV[1], {}
for i = 2, #ARGV do
  local u = ARGV[i]
  out[i - 1] = {redis.call("GET", p .. ":user:" .. u),
                redis.call("LRANGE", p .. ":seen:" .. u, 0, -1),
                redis.call("LRANGE", p .. ":clicked:" .. u, 0, -1)}
end
return out
"""

#: Applies a batch of increments server-side in one round trip: one ZINCRBY/HINCRBYFLOAT per
#: pair costs ~10 us of client time in redis-py, which made write-back the bottleneck (20
#: commands per event for co-visitation); the increments travel as one JSON argument because
#: redis-py packs each argument in Python. Zsets are trimmed to their strongest ``ARGV[1]``
#: members once they hold twice as many, so neighbour lists stay bounded in Redis too.
#: ARGV[2]: groups of increments, each either ["h", hash key, [field1, delta1, ...]] or, for
#: co-visitation, ["p", key prefix, [a1, b1, w1, a2, b2, w2, ...]]: zset ``prefix..a`` gains
#: ``b`` by ``w`` and ``prefix..b`` gains ``a``, each pair turned both ways here (on Redis's
#: core) rather than in the worker (measured: grouping the pairs by item in Python was 5% of
#: the event loop's time while a backlog drained).
#: ARGV[3], optional, a guard for a resend whose first try failed without an answer:
#: [offsets key, {partition: offset}]; the offsets were in the same transaction as the
#: increments, so if they are all there the increments are too, and nothing is applied.
APPLY_INCREMENTS = """
local cap = tonumber(ARGV[1])
if ARGV[3] then
  local guard = cjson.decode(ARGV[3])
  local landed = next(guard[2]) ~= nil  -- no offsets to tell by: apply
  for part, off in pairs(guard[2]) do
    if tonumber(redis.call("HGET", guard[1], part) or "-1") < off then landed = false end
  end
  if landed then return 0 end
end
for _, group in ipairs(cjson.decode(ARGV[2])) do
  local kind, key, values = group[1], group[2], group[3]
  if kind == "p" then
    local touched = {}
    for i = 1, #values, 3 do
      local a, b, w = values[i], values[i + 1], values[i + 2]
      redis.call("ZINCRBY", key .. a, w, b)
      redis.call("ZINCRBY", key .. b, w, a)
      touched[a], touched[b] = true, true
    end
    for item in pairs(touched) do
      if redis.call("ZCARD", key .. item) > 2 * cap then
        redis.call("ZREMRANGEBYRANK", key .. item, 0, -(cap + 1))
      end
    end
  else
    for i = 1, #values, 2 do
      redis.call("HINCRBYFLOAT", key, values[i], values[i + 1])
    end
  end
end
return 1
"""


#: Drops retired items' state, in one round trip: their metadata and first-seen time, their
#: entries in the per-item hashes (embeddings, popularity, counts, latent vectors), their
#: neighbour list and their place in the lists of those neighbours (other lists that still
#: hold it, pruned from its own, are dropped by their readers and decay away). ARGV: prefix,
#: JSON [hash keys], JSON [[item, retirement JSON], ...] to record and sweep, then JSON
#: [items] to sweep again. Only items recorded as retired are swept: one uploaded again
#: meanwhile keeps its new state.
RETIRE_ITEMS = """
local p = ARGV[1]
local hashes, retired = cjson.decode(ARGV[2]), p .. ":retired"
for _, d in ipairs(cjson.decode(ARGV[3])) do
  redis.call("HSET", retired, d[1], d[2])
end
local swept = 0
for _, group in ipairs({cjson.decode(ARGV[3]), cjson.decode(ARGV[4])}) do
  for _, d in ipairs(group) do
    local item = type(d) == "table" and d[1] or d
    if redis.call("HEXISTS", retired, item) == 1 then
      for _, h in ipairs(hashes) do redis.call("HDEL", h, item) end
      redis.call("ZREM", p .. ":items:ts", item)
      redis.call("ZREM", p .. ":changed", item)
      local key = p .. ":co:" .. item
      for _, n in ipairs(redis.call("ZRANGE", key, 0, -1)) do
        redis.call("ZREM", p .. ":co:" .. n, item)
      end
      redis.call("DEL", key)
      swept = swept + 1
    end
  end
end
return swept
"""


#: Registers uploaded items. ARGV: prefix, then (item, first-seen time, JSON metadata) triples.
#: An item new to the catalogue is appended to ``items:added`` too: other workers read that
#: list on from the last position they read, so an item registered late (its upload's event
#: time older than items already registered, from a lagging partition or a slow encoding)
#: reaches them all the same, as a cursor on first-seen times would not.
REGISTER_ITEMS = """
local p = ARGV[1]
for i = 2, #ARGV, 3 do
  redis.call("HSET", p .. ":items", ARGV[i], ARGV[i + 2])
  if redis.call("ZADD", p .. ":items:ts", "NX", ARGV[i + 1], ARGV[i]) == 1 then
    redis.call("RPUSH", p .. ":items:added", ARGV[i])
  end
end
return 1
"""

#: Items registered since position ARGV[2] of ``items:added`` (-1: every registered item),
#: with their first-seen times, and the position to read on from:
#: {length of items:added, [item1, time1, item2, time2, ...]}.
READ_NEW_ITEMS = """
local p, from = ARGV[1], tonumber(ARGV[2])
local n = redis.call("LLEN", p .. ":items:added")
if from < 0 then
  return {n, redis.call("ZRANGE", p .. ":items:ts", 0, -1, "WITHSCORES")}
end
local out = {}
for _, item in ipairs(redis.call("LRANGE", p .. ":items:added", from, n - 1)) do
  local ts = redis.call("ZSCORE", p .. ":items:ts", item)
  if ts then
    out[#out + 1] = item
    out[#out + 1] = ts
  end
end
return {n, out}
"""


class SharedState:
    """Reads and writes one :class:`Blend`'s state in Redis."""

    def __init__(self, redis: aioredis.Redis, blend: Blend, prefix: str = "streamrec",
                 refresh_s: float = 5.0, neighbour_refresh_s: float = 60.0,
                 worker: str = "worker", content_version: str | None = None,
                 max_users: int = MAX_USERS, user_ttl_s: float = USER_TTL_S) -> None:
        self.r = redis
        self.worker = worker
        self.neighbour_refresh_s = neighbour_refresh_s
        self.blend = blend
        self.p = prefix
        self.refresh_s = refresh_s
        self.pop = blend.sources.get("popularity")
        self.co = blend.sources.get("covisitation")
        self.mf = blend.sources.get("isgd")
        self.content = blend.sources.get("content")
        self.tags = blend.sources.get("tags")
        #: Item embeddings shared by all workers (None when content is switched off).
        self.cache = EmbeddingCache(redis, content_version, self.content.dim, prefix) \
            if self.content is not None and content_version else None
        self.counts = blend.item_counts
        # The models now keep what changed, which each write-back takes from them.
        for model in (self.pop, self.co, self.mf, self.counts, blend):
            if model is not None:
                model.record_changes()
        #: Users held in memory, least recently active first; at most ``max_users`` of them
        #: once a batch has started (users whose state is not yet in Redis are never dropped).
        self.loaded_users: OrderedDict[str, None] = OrderedDict()
        self.max_users = max_users
        self.user_ttl_s = user_ttl_s
        self.touched_users: set[str] = set()
        #: Users of the write-back in flight: kept in memory until it has landed or failed.
        self._writing: set[str] = set()
        #: Applied offset of each partition ("topic:partition") as far as this worker knows:
        #: read from Redis once per assignment, then advanced by its own write-backs.
        self._applied: dict[str, int] = {}
        self._applied_read: set[str] = set()
        #: What a failed write-back held, resent with the next one: offsets, and increments
        #: (JSON) with the offsets that guard them.
        self._unwritten_offsets: dict[str, int] = {}
        #: Offsets taken back by :meth:`reset_applied`, written whatever Redis holds.
        self._reset_offsets: dict[str, int] = {}
        #: The random id that marks this state in Redis, read at :meth:`load` (None: before).
        self.marker: bytes | None = None
        self._marker_key = f"{prefix}:state-id"
        self._in_doubt: list[tuple[bytes, dict[str, int]]] = []
        self._co_loaded: dict[int, float] = {}
        self._last_refresh = 0.0
        #: Wall time of the last pull of other workers' changes (0: pull everything).
        self._pulled_at = 0.0
        #: Items of a failed write-back, stamped as changed with the next one.
        self._unstamped: set[str] = set()
        #: No other worker beat recently: local copies need loading once, never refreshing.
        self.alone = False
        #: How much of ``items:added`` this worker has read (-1: nothing yet).
        self._items_read = -1
        #: Items retired here, swept from Redis once more at the next refresh: a write-back
        #: in flight as they were retired may have added to their counters again.
        self._sweep_again: set[str] = set()
        #: Whether a refresh has pulled the shared state once.
        self._pulled = False

    # ---- users ---------------------------------------------------------------------------

    def reset_applied(self, part: str, offset: int) -> None:
        """Take ``part``'s applied offset back to ``offset`` (its log was recreated): in
        Redis with the next write-back, whatever it held."""
        self._applied[part] = offset
        self._applied_read.add(part)
        self._unwritten_offsets.pop(part, None)
        self._reset_offsets[part] = offset

    async def check_marker(self) -> None:
        """:class:`StateLost` if the shared state this worker loaded has gone from Redis."""
        self._check_marker(await self.r.get(self._marker_key))

    def _check_marker(self, found: bytes | None) -> None:
        if self.marker is not None and found != self.marker:
            raise StateLost(
                f"the shared state in Redis is gone (its marker {self._marker_key} is "
                f"{'missing' if found is None else 'another'}): Redis restarted without "
                f"persistence, was flushed or replaced; stopping rather than serve and write "
                f"from a partial state (see docs/operations.md)")

    def forget_owned_state(self) -> None:
        """After a rebalance: drop the local user copies and applied offsets, which another
        worker may have moved on while this one did not own their partitions."""
        for user in self.loaded_users:
            if not self._unsaved(user):
                self.blend.forget_user(user)
        self.loaded_users.clear()
        self._applied_read.clear()

    def _unsaved(self, user: str) -> bool:
        """Whether ``user`` has changes not yet known to be in Redis."""
        return (user in self.touched_users or user in self._writing
                or user in (self.blend.journal or ()))

    def _keep_users(self, users: set[str]) -> None:
        """Mark the batch's ``users`` as just active, and drop the least recently active
        users beyond ``max_users`` from memory (their state is in Redis, read again when they
        return); never the batch's own."""
        held = self.loaded_users
        for u in users:
            held.move_to_end(u)
        excess = min(len(held) - self.max_users, len(held) - len(users))
        if excess <= 0:
            return
        for user in [u for u, _ in zip(held, range(excess)) if not self._unsaved(u)]:
            del held[user]
            self.blend.forget_user(user)

    def _user_state(self, user: str) -> bytes:
        b, ids = self.blend, self.blend.catalog.ids
        recent = self.co.recent.get(user, ()) if self.co is not None else ()
        state = {
            "recent": [ids[j] for j in recent],
            "n": b.activity.get(user, 0),
        }
        if self.mf is not None and user in self.mf.user_factors:
            state["p"] = self.mf.user_factors[user].astype(np.float32).tobytes().hex()
        if self.content is not None and user in self.content.profiles:
            profile, weight, ts = self.content.profiles[user]
            state["c"], state["cw"], state["ct"] = (profile.astype(np.float32).tobytes().hex(),
                                                    weight, ts)
            imageless = self.content.imageless.get(user)
            if imageless is not None:
                state["cn"] = imageless.astype(np.float32).tobytes().hex()
        if self.tags is not None and user in self.tags.profiles:
            weights, ts = self.tags.profiles[user]
            names = self.tags.tags.tag_names
            state["g"], state["gt"] = {names[t]: w for t, w in weights.items()}, ts
        return orjson.dumps(state)

    def _user_changes(self, users: set[str], journal: dict[str, list[tuple[int, bool, bool]]]
                      ) -> tuple[list, list[bytes]]:
        """What WRITE_USERS takes for ``users`` and those in the blend's ``journal``: their new
        seen and clicked items, and their JSON states."""
        ids = self.blend.catalog.ids
        deltas, states = [], []
        for u in users | journal.keys():
            changes = journal.get(u, ())
            deltas.append([u, [ids[j] for j, _, new in changes if new],
                           list(dict.fromkeys(ids[j] for j, clicked, _ in changes if clicked))])
            states.append(self._user_state(u))
        return deltas, states

    def _apply_user(self, user: str, raw: bytes | None, seen: list[bytes],
                    clicked: list[bytes]) -> None:
        if raw is None and not seen:
            return
        d = orjson.loads(raw) if raw is not None else {}
        b, cat = self.blend, self.blend.catalog
        b.forget_seen(user)
        if "seen" in d:  # a state written whole, before seen items had a key of their own
            seen, clicked = d["seen"], d.get("clicked", ())
            if b.journal is not None:  # moved there by the next write-back
                done = set(clicked)
                b.journal.setdefault(user, []).extend(
                    (cat.add(i, 0.0), i in done, True) for i in seen)
        def index(item: bytes | str) -> int:  # bytes from Redis, str from a whole state
            return cat.add(item.decode() if isinstance(item, bytes) else item, 0.0)

        for i in seen:
            b.mark_seen(user, index(i))
        b.clicked[user] = {index(i) for i in clicked}
        b.activity[user] = int(d.get("n", 0))
        if self.co is not None:  # without retired items: no new pair is made with them
            self.co.recent[user] = deque((cat.add(i, 0.0) for i in d.get("recent", ())
                                          if i not in cat.retired_at), maxlen=self.co.window)
        if self.mf is not None and "p" in d:
            self.mf.user_factors[user] = np.frombuffer(bytes.fromhex(d["p"]), np.float32).copy()
        if self.content is not None and "c" in d:
            # A state saved before profiles carried their weight is centred as one item's.
            self.content.profiles[user] = (np.frombuffer(bytes.fromhex(d["c"]), np.float32).copy(),
                                           float(d.get("cw", 1.0)), float(d.get("ct", 0.0)))
            # Without it (no item lacked an image, or an older state) the text is re-weighted
            # as items with an image have it.
            if "cn" in d:
                self.content.imageless[user] = np.frombuffer(bytes.fromhex(d["cn"]),
                                                             np.float32).copy()
            else:
                self.content.imageless.pop(user, None)
        if self.tags is not None and "g" in d:
            tag_id = self.tags.tags.tag_id
            self.tags.profiles[user] = ({tag_id(t): float(w) for t, w in d["g"].items()},
                                        float(d.get("gt", 0.0)))

    # ---- one batch ------------------------------------------------------------------------

    async def before_batch(self, users: Iterable[str], partitions: Iterable[str]) -> dict[str, int]:
        """Load users not held locally and stale neighbour lists; return applied offsets of
        ``partitions`` ("topic:partition"). At most one round trip, none once this worker holds
        all of it: in steady state a batch goes straight to learning (the read waited for Redis
        1-8 ms at 1,000 events/s on 2 busy cores)."""
        users = set(users)
        missing = [u for u in users if u not in self.loaded_users]
        parts = list(partitions)
        unread = [p for p in parts if p not in self._applied_read]
        stale = self._stale_neighbour_lists(users)
        # The epoch scales neighbour lists being loaded: needed only when some are.
        with_epoch = self.co is not None and bool(missing or stale)
        pipe = self.r.pipeline(transaction=False)
        if missing:
            pipe.eval(READ_USERS, 0, self.p, *missing)
        for j in stale:
            pipe.zrevrange(f"{self.p}:co:{self.blend.catalog.ids[j]}", 0,
                           self.co.max_neighbours - 1, withscores=True)
        if unread:
            pipe.hmget(f"{self.p}:offsets", unread)
        if with_epoch:
            pipe.get(f"{self.p}:co-epoch")
        res = await pipe.execute() if (missing or stale or unread or with_epoch) else []
        if missing:
            for u, (raw, seen, clicked) in zip(missing, res.pop(0)):
                self._apply_user(u, raw, seen, clicked)
                self.loaded_users[u] = None
        self._keep_users(users)
        co_epoch = res[-1] if with_epoch else None
        self._apply_neighbour_lists(stale, res, co_epoch)
        # Users just reloaded (after a restart or rebalance) bring recent items of their own.
        late = self._stale_neighbour_lists(missing)  # the lists loaded above are fresh now
        if late:
            pipe = self.r.pipeline(transaction=False)
            for j in late:
                pipe.zrevrange(f"{self.p}:co:{self.blend.catalog.ids[j]}", 0,
                               self.co.max_neighbours - 1, withscores=True)
            self._apply_neighbour_lists(late, await pipe.execute(), co_epoch)
        if unread:
            for part, off in zip(unread, res[len(stale)]):
                if off is not None:
                    self._applied[part] = max(int(off), self._applied.get(part, -1))
            self._applied_read.update(unread)
        return {p: self._applied[p] for p in parts if p in self._applied}

    def _stale_neighbour_lists(self, users: Iterable[str]) -> list[int]:
        if self.co is None:
            return []
        now = time.monotonic()
        max_age = math.inf if self.alone else self.neighbour_refresh_s
        stale = set()
        for u in users:
            for j in self.co.recent.get(u, ()):
                if now - self._co_loaded.get(j, -math.inf) > max_age:
                    stale.add(j)
        return list(stale)

    def _apply_neighbour_lists(self, items: list[int], lists: list, epoch_raw) -> None:
        now = time.monotonic()
        for j, pairs in zip(items, lists):
            self._apply_neighbours(j, pairs, epoch_raw)
            self._co_loaded[j] = now

    def _apply_neighbours(self, j: int, pairs: list, epoch_raw: bytes | None) -> None:
        if not pairs or epoch_raw is None:
            return
        co, cat = self.co, self.blend.catalog
        epoch = float(epoch_raw)
        if co.epoch is None or epoch > co.epoch:
            co.rescale(epoch)
        f = 2.0 ** (-(co.epoch - epoch) / co.half_life_s)
        co.set_neighbours(j, np.fromiter((cat.add(n.decode() if isinstance(n, bytes) else n, 0.0)
                                          for n, _ in pairs), np.int64, len(pairs)),
                          np.fromiter((w for _, w in pairs), np.float64, len(pairs)) * f)

    async def after_batch(self, offsets: dict[str, int], stats: dict[str, int]) -> None:
        """Write back what the batch changed, atomically with the offsets it reflects."""
        await self.write_back(offsets, stats)

    def write_back(self, offsets: dict[str, int], stats: dict[str, int]) -> Awaitable[list]:
        """Take what the batch changed (the journals and touched users are emptied now) and
        return the awaitable that writes it, atomically with ``offsets``. Started as a task, it
        sends at once and Redis applies it while the caller goes on computing (the increments
        cost Redis ~8 ms per 250 events, as long as ranking the batch's users).

        If the write fails (Redis unreachable), it is resent with the next one: the batch's
        retry does not learn its events again (the local copy has them), so it could not
        rebuild it. Whether the failed transaction landed is unknown, so its increments (the
        batch's counters too) go with a guard on its offsets (see ``APPLY_INCREMENTS``):
        applied once either way."""
        pipe = self.r.pipeline(transaction=True)
        for part, off in offsets.items():  # learned locally, whether or not this write lands
            self._applied[part] = max(off, self._applied.get(part, -1))
        offsets = {**self._reset_offsets, **offsets}
        self._reset_offsets = {}
        for part, off in self._unwritten_offsets.items():
            offsets[part] = max(off, offsets.get(part, -1))
        self._unwritten_offsets = {}
        cap = self.co.max_neighbours if self.co is not None else 0
        # EVAL rather than a registered script's EVALSHA: redis-py checks SCRIPT EXISTS before
        # every pipeline holding one (a round trip), and a NOSCRIPT inside MULTI would fail
        # alone while the rest of the transaction applied. Redis caches the compiled body.
        in_doubt, self._in_doubt = self._in_doubt, []
        for groups_json, guard in in_doubt:  # before this write's offsets, which may cover them
            pipe.eval(APPLY_INCREMENTS, 0, cap, groups_json,
                      orjson.dumps([f"{self.p}:offsets", guard]))
        groups: list = []
        popularity = self.pop.take_changes() if self.pop is not None else {}
        if popularity:
            groups.append(["h", f"{self.p}:pop:{int(self.pop.epoch)}",
                           [x for kv in popularity.items() for x in kv]])
        journal = self.counts.take_changes()
        if journal:
            clicks = [x for item, (c, _) in journal.items() if c for x in (item, c)]
            if clicks:
                groups.append(["h", f"{self.p}:item-clicks", clicks])
            groups.append(["h", f"{self.p}:item-events",
                           [x for item, (_, e) in journal.items() for x in (item, e)]])
        pairs = self.co.take_changes() if self.co is not None else {}
        if pairs:
            pipe.set(f"{self.p}:co-epoch", repr(self.co.epoch))
            groups.append(["p", f"{self.p}:co:", [x for (a, b), w in pairs.items()
                                                  for x in (a, b, w)]])
        changed = set(popularity)
        if journal:
            changed.update(journal)
        groups_json = orjson.dumps(groups) if groups else None
        if groups_json is not None:
            pipe.eval(APPLY_INCREMENTS, 0, cap, groups_json)
        # Vectors and user states are rewritten whole, so resending them is harmless.
        vectors = self.mf.take_changes() if self.mf is not None else set()
        if vectors:
            cat, Q = self.blend.catalog, self.mf.item_factors
            pipe.hset(f"{self.p}:isgd", mapping={
                i: Q[cat.index[i]].astype(np.float32).tobytes() for i in vectors})
        changed |= vectors
        changed |= self._unstamped
        self._unstamped = set()
        if changed:
            # When each item's shared counts and vector last changed: other workers pull just
            # those (a catalogue of a million items cannot be read whole every refresh).
            stamp = time.time()
            pipe.zadd(f"{self.p}:changed", dict.fromkeys(changed, stamp))
        journal = self.blend.take_changes()
        deltas, states = self._user_changes(self.touched_users, journal)
        users, self.touched_users = {d[0] for d in deltas}, set()
        if users:
            # One script call rather than commands per user: redis-py packs and parses each
            # command in Python, which cost more than Redis storing them.
            pipe.eval(WRITE_USERS, 0, self.p, self.blend.max_seen, int(self.user_ttl_s),
                      orjson.dumps(deltas), *states)
            self._writing |= users
        if offsets:
            pipe.hset(f"{self.p}:offsets", mapping=offsets)
        counters = {name: n for name, n in stats.items() if n}
        for name, n in counters.items():
            pipe.hincrby(f"{self.p}:stats", name, n)
        if groups_json is not None:
            in_doubt.append((groups_json, offsets))
        # In the transaction, so a state gone between two batches is noticed by the next one.
        pipe.get(self._marker_key)
        return self._execute(pipe, in_doubt, vectors, users, journal, offsets, counters,
                             changed)

    async def _execute(self, pipe, in_doubt: list, vectors: set[str], users: set[str],
                       journal: dict[str, list[tuple[int, bool, bool]]],
                       offsets: dict[str, int], counters: dict[str, int],
                       changed: set[str]) -> list:
        try:
            results = await pipe.execute()
        except BaseException:
            if counters:  # increments too: resent with the same guard, counted once
                in_doubt.append((orjson.dumps([["h", f"{self.p}:stats",
                                                [x for kv in counters.items() for x in kv]]]),
                                 offsets))
            # Resent, guarded, with the next write (a new failure keeps them for the one after).
            self._in_doubt = in_doubt + self._in_doubt
            if self.mf is not None:
                self.mf.mark_changed(vectors)
            self._unstamped |= changed  # stamped anew with the resend
            self.touched_users |= users
            later = self.blend.journal
            for u, changes in journal.items():  # before what users did since
                later[u] = changes + later.get(u, [])
            for part, off in offsets.items():
                self._unwritten_offsets[part] = max(off, self._unwritten_offsets.get(part, -1))
            raise
        finally:
            self._writing -= users
        self._check_marker(results[-1])
        return results

    # ---- items ----------------------------------------------------------------------------

    async def register_items(self, items: list[tuple[str, float, bytes]]) -> None:
        """Record uploaded items (id, first-seen time, JSON metadata) for every worker."""
        if not items:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.eval(REGISTER_ITEMS, 0, self.p,
                  *(x for i, ts, meta in items for x in (i, repr(float(ts)), meta)))
        pipe.hdel(f"{self.p}:retired", *{i for i, _, _ in items})  # uploaded again: live
        await pipe.execute()

    async def retire_items(self, retirements: list[tuple[str, float, str | None]]) -> None:
        """Record retired items (id, retirement time, reason) for every worker, and drop their
        state from Redis (see ``RETIRE_ITEMS``); the other workers forget them at their next
        refresh. The blend has forgotten them already, so no later write-back adds them back
        (one in flight now may: they are swept again at the next refresh)."""
        if not retirements:
            return
        now = time.time()
        await self._sweep([(item, orjson.dumps({"ts": ts, "reason": reason, "retired_at": now})
                            .decode()) for item, ts, reason in retirements],
                          [], max(ts for _, ts, _ in retirements))
        self._sweep_again.update(item for item, _, _ in retirements)

    async def _sweep(self, record: list[tuple[str, str]], again: Iterable[str],
                     ts: float) -> int:
        """Run ``RETIRE_ITEMS``: record and sweep ``record`` ((item, retirement JSON)), sweep
        ``again`` (items); ``ts``, a time of the retirements, names the popularity epochs."""
        hashes = [f"{self.p}:{k}" for k in ("items", "item-clicks", "item-events", "isgd")]
        if self.cache is not None:
            hashes.append(self.cache.key)
            for item in [i for i, _ in record] + list(again):  # a re-upload is encoded anew
                self.cache.local.pop(item, None)
        if self.pop is not None:
            span = self.pop.half_life_s * EPOCH_HALF_LIVES
            epochs = {epoch_of(ts, self.pop.half_life_s)}
            if self.pop.epoch is not None:
                epochs.add(self.pop.epoch)
            hashes += [f"{self.p}:pop:{int(e)}" for e in epochs | {e - span for e in epochs}]
        return await self.r.eval(RETIRE_ITEMS, 0, self.p, orjson.dumps(hashes),
                                 orjson.dumps(record), orjson.dumps(list(again)))

    async def _apply_retirements(self, remote: dict[bytes, bytes], loading: bool) -> None:
        """Forget the items retired by other workers since the last refresh, and sweep them
        from Redis again (unless ``loading``: this worker has written nothing yet): a
        write-back of this worker's may have added to them since."""
        cat, learned = self.blend.catalog, []
        for k, raw in remote.items():
            item = k.decode()
            if item not in cat.retired_at:
                ts = retirement_ts(raw)
                self.blend.forget_item(item, ts)
                learned.append((item, ts))
        again, self._sweep_again = self._sweep_again, set()
        if not loading:
            again.update(item for item, _ in learned)
        if again:
            await self._sweep([], again, max((ts for _, ts in learned), default=time.time()))

    async def load(self) -> None:
        """At start-up: the state's marker (created with the state), everything shared, and
        the last saved ranker."""
        await self.r.set(self._marker_key, uuid.uuid4().hex, nx=True)
        self.marker = await self.r.get(self._marker_key)
        await self.refresh(force=True)
        raw = await self.r.get(f"{self.p}:ranker")
        if raw is not None:
            self.blend.ranker.load_state(orjson.loads(raw))

    async def _other_workers_alive(self) -> bool:
        """Heartbeat in ``{p}:alive`` and whether any other worker beat recently."""
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(f"{self.p}:alive", {self.worker: now})
        pipe.zremrangebyscore(f"{self.p}:alive", "-inf", now - 3 * self.refresh_s)
        pipe.zcard(f"{self.p}:alive")
        return (await pipe.execute())[-1] > 1

    async def refresh(self, force: bool = False, early_s: float = 0.0) -> None:
        """Pull what other workers wrote: retirements, popularity, item vectors and counts,
        new items. Runs at most every ``refresh_s`` (less ``early_s``: a timer of that period
        may fire a little early, and would then skip a whole period) unless forced; call it
        between batches (journals empty). The first pull reads everything; later ones only the
        items stamped in ``{p}:changed`` since the last pull (less a margin), so a pull costs
        what changed, not the catalogue.

        A worker alone in its group skips the pulls: its hot copy already holds everything
        (the pulls cost ~30 ms at 2,000 items, which showed up as the p99 latency)."""
        now = time.monotonic()
        if not force and now - self._last_refresh < self.refresh_s - early_s:
            return
        self._last_refresh = now
        self.alone = not await self._other_workers_alive()
        wall = time.time()
        if self.alone and not force:
            await self._apply_retirements({}, loading=False)
            if self._pulled_at:  # nobody else wrote since: nothing to pull next time either
                self._pulled_at = wall
            return
        changed: list[bytes] | None = None  # None: everything
        if self._pulled_at:
            # Writes stamped before the last pull may land after it (a write-back in flight,
            # clocks apart): items stamped within a margin are read again.
            since = self._pulled_at - self.refresh_s - CLOCK_MARGIN_S
            changed = await self.r.zrangebyscore(f"{self.p}:changed", since, "+inf")
            if wall - self._pulled_at > 3600:
                await self.r.zremrangebyscore(f"{self.p}:changed", "-inf", wall - 86400)
        self._pulled_at = wall
        hashes = []
        epochs = []
        if self.pop is not None and self.pop.epoch is not None:
            span = self.pop.half_life_s * EPOCH_HALF_LIVES
            epochs = [self.pop.epoch - span, self.pop.epoch]
            hashes = [f"{self.p}:pop:{int(e)}" for e in epochs]
        hashes += [f"{self.p}:isgd", f"{self.p}:item-clicks", f"{self.p}:item-events"]
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(f"{self.p}:retired")
        pipe.eval(READ_NEW_ITEMS, 0, self.p, self._items_read)
        for key in hashes if changed is None or changed else ():
            if changed is None:
                pipe.hgetall(key)
            else:
                pipe.hmget(key, changed)
        retirements, items, *replies = await pipe.execute()
        if changed is not None:  # the changed fields each hash holds
            replies = [{k: v for k, v in zip(changed, r) if v is not None} for r in replies] \
                or [{} for _ in hashes]
        # Retirements first, so that nothing pulled below brings a retired item back.
        await self._apply_retirements(retirements, loading=not self._pulled)
        self._pulled = True
        retired = self.blend.catalog.retired_at
        res = replies[: len(epochs)]
        vectors, clicks, events = replies[len(epochs):]
        # The new items first, so that they enter the catalogue at their upload time: an item
        # first met in another worker's counts or vectors would enter as first seen at 0.
        read_to, flat = items
        new = [k.decode() for k in flat[::2]]
        embeddings = await self.cache.get_many(new) if self.cache is not None and new else {}
        tags = await self._item_tags(new) if self.tags is not None and new else {}
        self.blend.add_items([(k, float(ts), embeddings.get(k), tags.get(k, ()))
                              for k, ts in zip(new, flat[1::2])])
        self._items_read = int(read_to)
        if epochs:
            merged: dict[str, float] = {}
            for e, h in zip(epochs, res):
                f = 2.0 ** (-(epochs[-1] - e) / self.pop.half_life_s)
                for k, v in h.items():
                    k = k.decode()
                    if k not in retired:
                        merged[k] = merged.get(k, 0.0) + float(v) * f
            self.pop.set_raw(epochs[-1], merged)
        if self.mf is not None:
            for k, v in vectors.items():
                if (k := k.decode()) not in retired:
                    self.mf.set_item_vector(k, np.frombuffer(v, np.float32))
        self.counts.set_counts(
            {i: float(v) for k, v in clicks.items() if (i := k.decode()) not in retired},
            {i: float(v) for k, v in events.items() if (i := k.decode()) not in retired})

    async def _item_tags(self, items: list[str]) -> dict[str, list[str]]:
        """The tags of ``items`` from their upload metadata."""
        metas = await self.r.hmget(f"{self.p}:items", items)
        out = {}
        for item, meta in zip(items, metas):
            tags = orjson.loads(meta).get("tags") if meta else None
            if isinstance(tags, list):
                out[item] = [t for t in tags if isinstance(t, str)]
        return out

    async def save_ranker(self) -> None:
        await self.r.set(f"{self.p}:ranker", orjson.dumps(self.blend.ranker.state()))


def retirement_ts(raw: bytes) -> float:
    """The time of a retirement as ``{p}:retired`` holds it (0 if unreadable: retired all the
    same, and any upload after it brings the item back)."""
    try:
        ts = orjson.loads(raw).get("ts", 0.0)
        return float(ts) if isinstance(ts, (int, float)) and math.isfinite(ts) else 0.0
    except (orjson.JSONDecodeError, AttributeError):
        return 0.0


async def read_stats(redis: aioredis.Redis, prefix: str = "streamrec") -> dict[str, int]:
    """A worker group's counters (events, learned, recommendations, dead_letter, ...)."""
    return {k.decode(): int(v) for k, v in (await redis.hgetall(f"{prefix}:stats")).items()}
