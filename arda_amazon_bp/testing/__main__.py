"""``python -m arda_amazon_bp.testing``: run the sandbox Creators API in the foreground."""

import sys

from .sandbox import main

sys.exit(main())
