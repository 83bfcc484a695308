"""arda_amazon_bp: a Flask plugin that gives a BFF ``POST /api/amazon/import``."""

from typing import TYPE_CHECKING

from .errors import AmazonImportError, ErrorCode
from .hookspecs import hookimpl, hookspec

if TYPE_CHECKING:
    # Type checkers see the class itself; at run time it is imported on first use below,
    # so `import arda_amazon_bp` (or `.links`) stays cheap: the extension pulls in
    # flask-smorest, apispec, requests and limits, about a second on a small machine.
    from .extension import AmazonImport

__all__ = ["AmazonImport", "AmazonImportError", "ErrorCode", "hookimpl", "hookspec"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "AmazonImport":
        from .extension import AmazonImport

        return AmazonImport
    raise AttributeError(name)
