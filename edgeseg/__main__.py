"""``python -m edgeseg`` (also what ``torchrun -m edgeseg`` runs)."""

import sys

from edgeseg.cli import main

sys.exit(main())
