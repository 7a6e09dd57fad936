"""A Redis Cluster client over ``edgeward.io.resp``: one auto-pipelining connection per master.

Why not a library cluster client: the replay store's cost is the client's CPU per reservation
(``bench/test_replay_client.py``), and what a cluster adds to a single node is small: find the
slot of the command's key (CRC16 in C, ``binascii.crc_hqx``), look its master up in a list of
16,384 entries, and hand the command to that master's ``RespConnection``. That connection already
batches everything queued in one loop turn into one write, so a turn's reservations become one
pipeline per node with no extra queue (``bench/test_cluster_client.py`` measures the layer).

Routing (``command_key``): the slot is the one of the command's first key, hash tags
(``{...}``) honoured. Only the commands whose key position is known here are accepted; any other
raises ``ValueError`` at once rather than going to an arbitrary node.

Topology: the slot map comes from ``CLUSTER SLOTS`` of any reachable node (the known masters
first, then the seeds of the URL). It is loaded by the first command and reloaded

- on ``MOVED``: the slot is pointed at the named node at once and the command retried there,
  then the whole map reloaded in the background;
- on a connection failure: the node becomes suspect and a background task reloads the map with
  backoff (``REFRESH_MIN_S`` doubling to ``REFRESH_MAX_S``) until every master in the map answers
  ``PING``; this is how a promoted replica is found without any caller asking;
- on a ``CLUSTERDOWN``/``TRYAGAIN`` answer: once (background reloads are ``REFRESH_MIN_S`` apart
  at least, however many answers ask for one);
- when ``refresh()`` is called.

``ASK`` sends ``ASKING`` and the command to the named node in one pipeline, without touching the
map. A command is redirected at most ``max_redirects`` times, then fails with ``RespError``.

Failing closed: a command for a slot whose master cannot be reached fails with the
``RespError`` of that master's connection (``ConnectionLost`` when it was written), exactly as on
one node, and so does a slot no master serves. Nothing is sent to a replica.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections.abc import Iterable, Sequence
from urllib.parse import quote, unquote, urlsplit

import hiredis

from edgeward.io.resp import Arg, Reply, RespConnection, RespError

__all__ = ("SLOTS", "ClusterConnection", "command_key", "key_slot", "parse_cluster_url")

log = logging.getLogger(__name__)

SLOTS = 16384
_ReplyError = hiredis.ReplyError
REFRESH_MIN_S = 0.1
REFRESH_MAX_S = 1.0

# Where the first key is, for the commands edgeward sends: at index 1, after numkeys (EVAL,
# EVALSHA: a script with no key is refused, it has no slot), or after STREAMS (XREAD; a blocking
# XREAD holds its node's connection, so give it a client of its own).
_KEY_AT_1 = frozenset(
    {"GET", "SET", "DEL", "EXISTS", "EXPIRE", "PEXPIRE", "TTL", "PTTL", "INCR", "INCRBY", "XADD", "XLEN", "XRANGE",
     "XREVRANGE"}
)
_KEY_AFTER_NUMKEYS = frozenset({"EVAL", "EVALSHA"})
_KEY_AFTER_STREAMS = frozenset({"XREAD"})


def command_key(command: Sequence[Arg]) -> Arg:
    """The key whose slot routes ``command``; ``ValueError`` for a command not routed here."""
    name = command[0]
    if type(name) is str and name in _KEY_AT_1 and len(command) > 1:  # the hot path: SET, as written
        return command[1]
    name = (bytes(name).decode("ascii", "replace") if isinstance(name, bytes | memoryview) else str(name)).upper()
    try:
        if name in _KEY_AT_1:
            return command[1]
        if name in _KEY_AFTER_NUMKEYS:
            if int(command[2]) < 1:
                raise ValueError(f"{name} without keys has no slot")
            return command[3]
        if name in _KEY_AFTER_STREAMS:
            for index, arg in enumerate(command):
                if isinstance(arg, str | bytes) and arg.upper() in ("STREAMS", b"STREAMS"):
                    return command[index + 1]
            raise IndexError("STREAMS")
    except (IndexError, TypeError) as exc:
        raise ValueError(f"{name}: no key where one was expected") from exc
    raise ValueError(f"the cluster client does not route {name}: its key position is not known here")


def key_slot(key: Arg) -> int:
    """CRC16 (XMODEM, as ``binascii.crc_hqx``) of the key or of its hash tag, modulo 16384."""
    if isinstance(key, str):
        data = key.encode()
    elif isinstance(key, bytes):
        data = key
    elif isinstance(key, memoryview):
        data = key.tobytes()
    elif isinstance(key, int):
        data = str(key).encode()
    else:
        raise ValueError(f"a key must be text, bytes or an integer, got {key!r}")
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:  # "{}" is no tag: the whole key counts
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) & (SLOTS - 1)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """``redis+cluster://[[user]:password@]host[:port][,host[:port]...]``: the seed nodes and the
    credentials every node is opened with. Cluster nodes have database 0 only, so a path other than
    ``/`` or ``/0`` is refused, as is any query parameter."""
    parts = urlsplit(url)
    if parts.scheme != "redis+cluster":
        raise ValueError(f"expected a redis+cluster:// URL, got {parts.scheme!r}")
    if parts.query or parts.path not in ("", "/", "/0"):
        raise ValueError("a redis+cluster:// URL takes no database and no parameters")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    seeds = []
    for seed in hosts.split(","):
        node = urlsplit(f"//{seed}")
        try:
            port = node.port or 6379
        except ValueError as exc:
            raise ValueError(f"bad port in cluster seed {seed!r}") from exc
        if not node.hostname:
            raise ValueError(f"cluster seed without a host: {seed!r}")
        seeds.append((node.hostname, port))
    return seeds, username, password


def _redirect(reply: Reply) -> tuple[str, int, str, int] | None:
    """(kind, slot, host, port) of a ``MOVED``/``ASK`` error reply, else None."""
    if not isinstance(reply, hiredis.ReplyError):
        return None
    kind, _, rest = str(reply).partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, address = rest.partition(" ")
    host, _, port = address.rpartition(":")
    return kind, int(slot), host.strip("[]"), int(port)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _needs_refresh(reply: Reply) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith(("CLUSTERDOWN", "TRYAGAIN"))


class ClusterConnection:
    """Redis Cluster behind the interface of ``RespConnection``; see the module docstring.

    ``send`` and ``execute`` are coroutines: the command goes to its node's queue when awaited,
    so a caller that awaits at once (the replay store) pays no extra future or callback. ``pipeline``
    returns a future, split into one pipeline per node and reassembled in order.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_ms: int = 1000,
        connect_timeout_ms: int | None = None,
        max_redirects: int = 5,
    ) -> None:
        if socket_timeout_ms <= 0 or (connect_timeout_ms is not None and connect_timeout_ms <= 0):
            raise ValueError("timeouts must be positive")
        self._seeds, username, password = parse_cluster_url(url)
        self._userinfo = ""
        if password is not None:
            self._userinfo = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
        self._socket_timeout_ms = socket_timeout_ms
        self._connect_timeout_ms = connect_timeout_ms
        self._max_redirects = max_redirects
        self._nodes: dict[tuple[str, int], RespConnection] = {}
        self._slots: list[RespConnection | None] = [None] * SLOTS
        self._loaded = False
        self._suspects: set[RespConnection] = set()  # failed since the last refresh that checked them
        self._loading: asyncio.Task[None] | None = None  # single flight of a map load
        self._refresher: asyncio.Task[None] | None = None
        self._next_reload = 0.0  # loop time before which the refresher does not reload again
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._retired_writes = self._retired_commands = 0  # counters of connections closed since
        self.redirects = 0  # MOVED and ASK answers followed

    # -- counters, as RespConnection's ------------------------------------------------------

    @property
    def writes(self) -> int:
        """Writes over every node connection: a turn that reached three masters counts three."""
        return self._retired_writes + sum(node.writes for node in self._nodes.values())

    @property
    def commands_written(self) -> int:
        return self._retired_commands + sum(node.commands_written for node in self._nodes.values())

    # -- commands ---------------------------------------------------------------------------

    async def send(self, command: Sequence[Arg]) -> list[Reply]:
        """One command on its slot's master, pipelined with the rest of this loop turn."""
        slot = key_slot(command_key(command))
        node = self._slots[slot] or await self._master(slot)
        try:
            replies = await node.send(command)
        except RespError:
            self._suspect(node)
            raise
        if isinstance(replies[0], _ReplyError):
            return [await self._answer_error(command, slot, replies[0])]
        return replies

    async def execute(self, *args: Arg) -> Reply:
        return (await self.send(args))[0]

    def pipeline(self, commands: Iterable[Sequence[Arg]]) -> asyncio.Future[list[Reply]]:
        """The replies of ``commands`` in order, whatever nodes they went to.

        When a node gives no answer the future fails with its ``RespError``, as on one node when
        the connection breaks: the commands other nodes answered may have run.
        """
        batch = list(commands)
        if not batch:
            raise ValueError("no commands")
        slots = [key_slot(command_key(command)) for command in batch]  # refuses unrouted ones now
        return asyncio.ensure_future(self._pipeline(batch, slots))

    async def ping(self) -> bool:
        """Readiness: True when every slot has a master and every master answers ``PING``."""
        try:
            if not self._loaded:
                await self._load()
        except RespError:
            return False
        if None in self._slots:
            return False
        masters = [node for node in set(self._slots) if node is not None]
        answers = await asyncio.gather(*(node.ping() for node in masters))
        for node, answered in zip(masters, answers, strict=True):
            if not answered:
                self._suspect(node)
        return all(answers)

    async def refresh(self) -> None:
        """Reload the slot map now (``RespError`` when no node answers)."""
        await self._load(force=True)

    async def drain(self) -> None:
        """Wait until every command submitted to a node so far has its replies or its failure."""
        for node in list(self._nodes.values()):
            await node.drain()

    async def close(self) -> None:
        """Stop refreshing and close every node connection (their pending commands fail)."""
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.wait([self._refresher])
        if self._loading is not None:  # let its waiters have their answer (bounded by the timeouts)
            await asyncio.wait([self._loading])
        nodes, self._nodes = list(self._nodes.values()), {}
        self._slots = [None] * SLOTS
        for node in nodes:
            await node.close()
        if self._closing:
            await asyncio.wait(self._closing)

    # -- routing, redirects -----------------------------------------------------------------

    async def _pipeline(self, batch: list[Sequence[Arg]], slots: list[int]) -> list[Reply]:
        groups: dict[RespConnection, list[int]] = {}
        for index, slot in enumerate(slots):
            node = self._slots[slot] or await self._master(slot)
            groups.setdefault(node, []).append(index)
        sent = [(node, node.pipeline([batch[i] for i in indexes]), indexes) for node, indexes in groups.items()]
        replies: list[Reply] = [None] * len(batch)
        failure: RespError | None = None
        for node, future, indexes in sent:  # every future awaited, so no failure goes unretrieved
            try:
                answers = await future
            except RespError as exc:
                self._suspect(node)
                failure = failure or exc
                continue
            for index, reply in zip(indexes, answers, strict=True):
                replies[index] = reply
        if failure is not None:
            raise failure
        for index, reply in enumerate(replies):
            if isinstance(reply, hiredis.ReplyError):
                replies[index] = await self._answer_error(batch[index], slots[index], reply)
        return replies

    async def _answer_error(self, command: Sequence[Arg], slot: int, reply: Reply) -> Reply:
        """Follow ``MOVED``/``ASK`` (at most ``max_redirects``); any other error reply is the answer."""
        for _ in range(self._max_redirects):
            redirect = _redirect(reply)
            if redirect is None:
                if _needs_refresh(reply):
                    self._request_refresh()
                return reply
            kind, moved_slot, host, port = redirect
            self.redirects += 1
            node = self._node(host, port)
            try:
                if kind == "MOVED":
                    self._slots[moved_slot] = node
                    self._request_refresh()  # one moved slot often means a resharding: reload it all
                    (reply,) = await node.send(command)
                else:
                    _, reply = await node.pipeline([("ASKING",), command])
            except RespError:
                self._suspect(node)
                raise
        if _redirect(reply) is not None:
            raise RespError(f"slot {slot}: more than {self._max_redirects} redirects")
        return reply

    async def _master(self, slot: int) -> RespConnection:
        """The master of ``slot`` once the map is loaded; ``RespError`` when none serves it."""
        if self._closed:
            raise RespError("Redis connection closed")
        if not self._loaded:
            await self._load()
        node = self._slots[slot]
        if node is None:
            self._request_refresh()
            raise RespError(f"no reachable Redis Cluster master serves slot {slot}")
        return node

    # -- topology ---------------------------------------------------------------------------

    def _node(self, host: str, port: int) -> RespConnection:
        node = self._nodes.get((host, port))
        if node is None:
            if self._closed:
                raise RespError("Redis connection closed")
            name = f"[{host}]" if ":" in host else host
            node = RespConnection(
                f"redis://{self._userinfo}{name}:{port}",
                socket_timeout_ms=self._socket_timeout_ms,
                connect_timeout_ms=self._connect_timeout_ms,
            )
            self._nodes[(host, port)] = node
        return node

    def _suspect(self, node: RespConnection) -> None:
        self._suspects.add(node)
        self._request_refresh()

    def _request_refresh(self) -> None:
        if self._closed or (self._refresher is not None and not self._refresher.done()):
            return
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_until_served())

    async def _refresh_until_served(self) -> None:
        """Reload the map, with backoff, until each master in it answers (a failover done).

        Reloads are ``REFRESH_MIN_S`` apart at least, however many errors ask for one."""
        loop = asyncio.get_running_loop()
        delay = REFRESH_MIN_S
        while not self._closed:
            if (wait := self._next_reload - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._next_reload = loop.time() + REFRESH_MIN_S
            try:
                await self._load(force=True)
            except RespError as exc:
                log.debug("Redis Cluster: map reload failed: %r", exc)
            else:
                for node in list(self._suspects):
                    if await node.ping():
                        self._suspects.discard(node)
                if not self._suspects:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, REFRESH_MAX_S)

    async def _load(self, *, force: bool = False) -> None:
        """Load the slot map once at a time; concurrent callers wait for the same load."""
        if self._loaded and not force:
            return
        if self._loading is None or self._loading.done():
            self._loading = asyncio.get_running_loop().create_task(self._read_map())
            self._loading.add_done_callback(_retrieve)  # a load its callers stopped waiting for
        await asyncio.shield(self._loading)

    async def _read_map(self) -> None:
        known = [address for address, node in self._nodes.items() if node not in self._suspects]
        candidates = list(dict.fromkeys([*known, *self._seeds, *self._nodes]))
        errors = []
        for host, port in candidates:
            try:
                reply = await self._node(host, port).execute("CLUSTER", "SLOTS")
            except RespError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            if not isinstance(reply, list) or not reply:
                errors.append(f"{host}:{port}: {reply!r}")
                continue
            self._apply(reply, host)
            return
        raise RespError(f"no Redis Cluster node answered CLUSTER SLOTS: {'; '.join(errors)}")

    def _apply(self, ranges: list[Reply], asked_host: str) -> None:
        """Install the map of a ``CLUSTER SLOTS`` answer; close connections to nodes no longer masters."""
        slots: list[RespConnection | None] = [None] * SLOTS
        for entry in ranges:
            if not isinstance(entry, list) or len(entry) < 3 or not isinstance(entry[2], list):
                raise RespError(f"unexpected CLUSTER SLOTS entry: {entry!r}")
            start, end, (host, port, *_) = entry[0], entry[1], entry[2]
            if not (isinstance(start, int) and isinstance(end, int) and isinstance(port, int)):
                raise RespError(f"unexpected CLUSTER SLOTS entry: {entry!r}")
            # An empty or "?" host means "the address you reached me at".
            name = host.decode() if isinstance(host, bytes) and host not in (b"", b"?") else asked_host
            node = self._node(name, port)
            slots[start : end + 1] = [node] * (end - start + 1)
        masters = set(slots)
        for address, node in list(self._nodes.items()):
            if node not in masters:
                del self._nodes[address]
                self._retire(node)
        self._suspects &= masters
        self._slots = slots
        self._loaded = True

    def _retire(self, node: RespConnection) -> None:
        """Close a connection once its pending commands are answered, without holding anyone up."""
        self._retired_writes += node.writes
        self._retired_commands += node.commands_written

        async def retire() -> None:
            await node.drain()
            await node.close()

        task = asyncio.get_running_loop().create_task(retire())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

