"""Test helpers for hosts of the plugin: the sandbox Creators API (``sandbox``)."""
