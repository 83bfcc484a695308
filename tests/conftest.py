"""Shared fixtures. Fixture families live in ``tests/fixtures_*.py`` and are imported here."""

from fixtures_app import amazon, app, client, creators_env, make_app  # noqa: F401
from fixtures_credentials import credentials_file, env_credentials, fake_op  # noqa: F401
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
