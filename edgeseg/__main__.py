"""``python -m edgeseg`` (also what ``torchrun -m edgeseg`` runs)."""

import sys

from edgeseg.cli import main

if __name__ == "__main__":  # not when a spawned worker process (parallel conversion) imports the main module
    sys.exit(main())
