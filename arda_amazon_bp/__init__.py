"""arda_amazon_bp: a Flask plugin that gives a BFF ``POST /api/amazon/import``."""

from .errors import AmazonImportError, ErrorCode
from .hookspecs import hookimpl, hookspec

__all__ = ["AmazonImport", "AmazonImportError", "ErrorCode", "hookimpl", "hookspec"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Imported lazily so `links`/`marketplaces` stay importable without Flask machinery.
    if name == "AmazonImport":
        from .extension import AmazonImport

        return AmazonImport
    raise AttributeError(name)
