"""Test an integration offline: the sandbox Creators API and a handle to drive it.

* :mod:`arda_amazon_bp.testing.sandbox`: a strict stand-in for Amazon's Creators API
  (token endpoints and ``getItems``), with fault injection and call statistics;
* :class:`AmazonSandbox` and :func:`running_sandbox`: start it on loopback and drive it;
* :mod:`arda_amazon_bp.testing.pytest_plugin`: the ``amazon_sandbox`` fixture, registered
  with pytest through the ``pytest11`` entry point.

Nothing here imports pytest except the plugin module, which only pytest loads.
docs/testing-your-integration.md shows host tests.
"""

from .client import EXAMPLE_ASIN, AmazonSandbox, running_sandbox

__all__ = ["EXAMPLE_ASIN", "AmazonSandbox", "running_sandbox"]
