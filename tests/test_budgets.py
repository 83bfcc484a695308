"""Per-user budgets (``AMAZON_PRINCIPAL_LIMITS``): one user cannot spend everyone's quota.

In process against the requests-mock Amazon, then across two gunicorn workers sharing a
real Redis (``examples/stack.py``), where an access log with each worker's pid shows that
both workers served the same user.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import requests
from fixtures_app import make_item
from flask import Flask, Request
from stack import StackHandle, run_stack

from arda_amazon_bp import hookimpl
from arda_amazon_bp.budgets import (
    ANONYMOUS,
    PrincipalBudgets,
    default_principal_key,
    principal_key,
)
from arda_amazon_bp.config import ConfigError, Settings
from arda_amazon_bp.plugins import make_plugin_manager
from arda_amazon_bp.quota import NAMESPACE, Quota

TOKENS = {"token-alice": "alice", "token-bob": "bob"}


class Users:
    """Bearer tokens of two users; the principal is a dict with an ``id``."""

    @hookimpl
    def arda_amazon_authenticate(self, request: Request) -> dict[str, str] | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = TOKENS.get(token) if scheme == "Bearer" else None
        return {"id": user, "name": user.title()} if user else None


def link(n: int) -> str:
    return f"https://www.amazon.com/dp/B0BUDGET{n:02d}"


def bearer(user: str) -> dict[str, str]:
    token = next(t for t, u in TOKENS.items() if u == user)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def budget_app(make_app: Callable[..., Flask], amazon: Any) -> Flask:
    amazon.add(*(make_item(f"B0BUDGET{n:02d}") for n in range(20)))
    app = make_app(auth=False, AMAZON_PRINCIPAL_LIMITS="3/day")
    app.extensions["test_extension"].plugin_manager.register(Users())
    return app


def imports(app: Flask, user: str, n: int) -> Any:
    return app.test_client().post("/api/amazon/import", json={"url": link(n)}, headers=bearer(user))


def assert_user_limited(response: Any, limit: str = "day") -> dict[str, Any]:
    assert response.status_code == 429, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "AMAZON_RATE_LIMITED"
    assert error["details"]["source"] == "user"
    assert error["details"]["limit"] == limit
    assert int(response.headers["Retry-After"]) >= 1
    return dict(error["details"])


# -- the principal's key --------------------------------------------------------------------


def test_the_default_key_is_the_id_when_there_is_one_else_the_text() -> None:
    assert default_principal_key({"id": 42, "email": "a@example.com"}) == "42"
    assert default_principal_key(SimpleNamespace(id="u-1", name="Ann")) == "u-1"
    assert default_principal_key("alice") == "alice"
    assert default_principal_key({"sub": "x"}) == str({"sub": "x"})
    pm = make_plugin_manager()
    assert principal_key(pm, {"id": "u-9"}) == "u-9"
    assert principal_key(pm, None) == ANONYMOUS  # authentication disabled: one shared key


def test_a_host_hook_chooses_the_key_over_the_default() -> None:
    class BySub:
        @hookimpl
        def arda_amazon_principal_key(self, principal: Any) -> str:
            return str(principal["sub"])

    pm = make_plugin_manager()
    pm.register(BySub())
    assert principal_key(pm, {"sub": "auth0|7", "id": "ignored"}) == "auth0|7"


def test_a_malformed_budget_is_refused_naming_the_key() -> None:
    quota = Quota(Settings.from_config({}))
    with pytest.raises(ConfigError, match="AMAZON_PRINCIPAL_LIMITS"):
        PrincipalBudgets("lots/fortnight", quota)
    with pytest.raises(ConfigError, match="AMAZON_PRINCIPAL_LIMITS"):
        PrincipalBudgets("0/day", quota)


# -- in process ---------------------------------------------------------------------------------


def test_a_users_fourth_new_asin_is_429_while_cached_ones_and_other_users_still_import(
    budget_app: Flask, amazon: Any
) -> None:
    for n in range(3):
        assert imports(budget_app, "alice", n).status_code == 200
    calls = amazon.get_items_requests()
    details = assert_user_limited(imports(budget_app, "alice", 3))
    assert details["quota"] == "3 per 1 day"
    assert amazon.get_items_requests() == calls  # refused before reaching Amazon
    for n in range(3):  # cache hits are free
        assert imports(budget_app, "alice", n).status_code == 200
    assert imports(budget_app, "bob", 3).status_code == 200  # bob has his own budget
    assert imports(budget_app, "bob", 0).status_code == 200  # and a hit costs him nothing
    assert_user_limited(imports(budget_app, "alice", 4))


def test_the_batch_route_counts_each_missed_asin(budget_app: Flask) -> None:
    assert imports(budget_app, "alice", 0).status_code == 200  # one spent, now cached
    response = budget_app.test_client().post(
        "/api/amazon/import/batch",
        json={"urls": [link(0), link(1), link(2), link(3), link(4)]},
        headers=bearer("alice"),
    )
    assert response.status_code == 200
    results = response.get_json()["results"]
    # link(0) is a hit (free); two of the four misses fit in the budget, in request order.
    assert [r["status"] for r in results] == [200, 200, 200, 429, 429]
    for result in results[3:]:
        assert result["error"]["code"] == "AMAZON_RATE_LIMITED"
        assert result["error"]["details"]["source"] == "user"
    assert imports(budget_app, "bob", 4).status_code == 200


def test_a_short_window_refuses_with_its_own_limit_and_retry_after(
    make_app: Callable[..., Flask], amazon: Any
) -> None:
    amazon.add(*(make_item(f"B0BUDGET{n:02d}") for n in range(5)))
    app = make_app(auth=False, AMAZON_PRINCIPAL_LIMITS="2/minute;500/day")
    app.extensions["test_extension"].plugin_manager.register(Users())
    assert imports(app, "alice", 0).status_code == 200
    assert imports(app, "alice", 1).status_code == 200
    response = imports(app, "alice", 2)
    details = assert_user_limited(response, limit="minute")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert details["retryAfter"] == int(response.headers["Retry-After"])


def test_without_a_budget_nobody_is_counted(make_app: Callable[..., Flask], amazon: Any) -> None:
    amazon.add(*(make_item(f"B0BUDGET{n:02d}") for n in range(6)))
    app = make_app(auth=False)
    app.extensions["test_extension"].plugin_manager.register(Users())
    assert app.extensions["arda_amazon_bp"].lookup.budgets is None
    assert [imports(app, "alice", n).status_code for n in range(6)] == [200] * 6


def test_two_apps_sharing_a_redis_share_one_budget(
    make_app: Callable[..., Flask], amazon: Any, redis_url: str
) -> None:
    """What holds across workers and hosts: the counts live in the quota's storage."""
    amazon.add(*(make_item(f"B0BUDGET{n:02d}") for n in range(6)))
    apps = []
    for _ in range(2):
        app = make_app(
            auth=False,
            AMAZON_PRINCIPAL_LIMITS="3/day",
            AMAZON_RATE_LIMIT_STORAGE_URI=redis_url,
            AMAZON_CACHE_STORAGE_URI="memory://",
        )
        app.extensions["test_extension"].plugin_manager.register(Users())
        apps.append(app)
    assert imports(apps[0], "alice", 0).status_code == 200
    assert imports(apps[1], "alice", 1).status_code == 200
    assert imports(apps[0], "alice", 2).status_code == 200
    assert_user_limited(imports(apps[1], "alice", 3))
    # Stored under a hash: no user id in the storage.
    with redis.Redis.from_url(redis_url) as client:
        keys = [k.decode() for k in client.scan_iter(match=f"*{NAMESPACE}/{{user:*")]
    assert keys and not any("alice" in k for k in keys)


# -- two gunicorn workers sharing Redis -------------------------------------------------------

RATE = 5
ACCESS_LOG = ["--access-logfile", "-", "--access-logformat", "access pid=%(p)s %(q)s"]
_TAGS = itertools.count()


def _served(stack: StackHandle, send: Callable[[str], requests.Response]) -> tuple[Any, str]:
    """``send(query)``'s response and the pid of the worker that logged it; ``query``
    tags the request so that its access log line is told apart from any other."""
    tag = f"tag={next(_TAGS)}"
    response = send(tag)
    deadline = time.monotonic() + 5
    while not (found := re.search(rf"access pid=<(\d+)> {tag}$", stack.logs(), re.MULTILINE)):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.02)
    return response, found.group(1)


@pytest.mark.slow
def test_the_same_budget_holds_across_two_gunicorn_workers_sharing_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXAMPLE_BFF_USERS", '{"token-alice": "alice", "token-bob": "bob"}')
    with run_stack(
        workers=2,
        threads=4,
        rate=RATE,
        storage="redis",
        config={
            "AMAZON_RATE_LIMITS": f"{RATE}/second;8640/day",
            "AMAZON_PRINCIPAL_LIMITS": "3/day",
        },
        gunicorn_args=[*ACCESS_LOG, "--keep-alive", "60"],
    ) as stack:
        # One keep-alive connection per worker: gthread serves a connection in one worker.
        sessions: dict[str, requests.Session] = {}
        for _ in range(60):
            session = requests.Session()
            _, pid = _served(
                stack, lambda q, s=session: s.get(f"{stack.bff_url}/healthz?{q}", timeout=5)
            )
            if pid in sessions:
                session.close()
            else:
                sessions[pid] = session
            if len(sessions) == 2:
                break
        assert len(sessions) == 2, "could not reach both workers"
        first, second = sessions.values()

        def imports_on(session: requests.Session, user: str, asin: str) -> tuple[Any, str]:
            token = next(t for t, u in TOKENS.items() if u == user)
            return _served(
                stack,
                lambda q: session.post(
                    f"{stack.import_url}?{q}",
                    json={"url": f"https://www.amazon.com/dp/{asin}"},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                ),
            )

        allowed = [
            imports_on(first, "alice", "B0SYN00901"),
            imports_on(second, "alice", "B0SYN00902"),
            imports_on(first, "alice", "B0SYN00903"),
        ]
        assert [r.status_code for r, _ in allowed] == [200, 200, 200]
        assert len({pid for _, pid in allowed}) == 2  # both workers counted alice
        refused = [
            imports_on(second, "alice", "B0SYN00904"),
            imports_on(first, "alice", "B0SYN00905"),
        ]
        assert len({pid for _, pid in refused}) == 2
        for response, _ in refused:
            assert response.status_code == 429, response.text
            details = response.json()["error"]["details"]
            assert (details["source"], details["limit"]) == ("user", "day")
            assert int(response.headers["Retry-After"]) >= 1
        # Alice's imports from before still answer (the cache is in Redis too) …
        again, _ = imports_on(second, "alice", "B0SYN00901")
        assert again.status_code == 200
        # … and bob still imports, on either worker.
        for session, asin in ((first, "B0SYN00904"), (second, "B0SYN00906")):
            response, _ = imports_on(session, "bob", asin)
            assert response.status_code == 200, response.text
        # Three getItems calls for alice, two for bob: the refused ones never left.
        stats = stack.sandbox.stats()
        sent = [a for c in stats["calls"] if c["endpoint"] == "getItems" for a in c["asins"]]
        assert sorted(sent) == [f"B0SYN0090{n}" for n in (1, 2, 3, 4, 6)]
        for session in sessions.values():
            session.close()
