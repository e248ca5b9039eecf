"""``python -m apps.endoscopy ...``: the same as ``edgeseg demo ...``."""

from __future__ import annotations

import sys

from edgeseg.apps.endoscopy.cli import main

if __name__ == "__main__":
    sys.exit(main())
