"""Shared fixtures. Fixture families live in ``tests/fixtures_*.py`` and are imported here."""
