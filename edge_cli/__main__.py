"""``python -m edge_cli``: the same as the ``edge-runtime`` console script."""
from __future__ import annotations

import sys

from edge_cli.main import main

sys.exit(main())
