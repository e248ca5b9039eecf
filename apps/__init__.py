"""On-device applications built only on the public ``runtimes`` API (no torch)."""
