"""Shared fixtures. Fixture families live in ``tests/fixtures_*.py`` and are imported here."""

from fixtures_redis import own_redis, redis_server, redis_url  # noqa: F401
