"""Shared fixtures. Fixture families live in ``tests/fixtures_*.py`` and are imported here."""

import pytest
from fixtures_app import amazon, app, client, creators_env, make_app  # noqa: F401
from fixtures_credentials import credentials_file, env_credentials, fake_op  # noqa: F401
from fixtures_demo import running_demo  # noqa: F401
from fixtures_host import make_host  # noqa: F401
from fixtures_redis import (  # noqa: F401
    own_redis,
    redis_cluster_nodes,
    redis_cluster_uri,
    redis_sentinel_pair,
    redis_sentinel_uri,
    redis_server,
    redis_url,
)
from fixtures_sandbox import sandbox, sandbox_app, sandbox_server  # noqa: F401

from arda_amazon_bp.quota import reset_process_memory


@pytest.fixture(autouse=True)
def _fresh_process_quota() -> None:
    """memory:// limits are shared per process and credential (docs/configuration.md), and
    not every test closes its apps: each test starts with no calls on record."""
    reset_process_memory()
