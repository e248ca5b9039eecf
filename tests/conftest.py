from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KVASIR = Path(os.environ.get("EDGESEG_KVASIR", REPO.parent / "shared" / "data" / "kvasir-seg-256"))


@pytest.fixture(scope="session")
def kvasir_root() -> Path:
    """The real Kvasir-SEG copy beside the repo; tests using it skip cleanly when it is absent."""
    if not (KVASIR / "images").is_dir():
        pytest.skip(f"Kvasir-SEG not found at {KVASIR} (set EDGESEG_KVASIR)")
    return KVASIR


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Keep the suite predictable on 2-core CI machines.
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:
        pass
    yield
