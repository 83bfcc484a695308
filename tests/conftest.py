"""Shared fixtures. Fixture families live in ``tests/fixtures_*.py`` and are imported here."""

from fixtures_app import amazon, app, client, creators_env, make_app  # noqa: F401
from fixtures_credentials import credentials_file, env_credentials, fake_op  # noqa: F401
from fixtures_host import make_host  # noqa: F401
from fixtures_redis import own_redis, redis_server, redis_url  # noqa: F401
from fixtures_sandbox import sandbox, sandbox_app, sandbox_server  # noqa: F401
