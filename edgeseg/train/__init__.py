"""Training: `loop` (TrainConfig, train), `losses`, `checkpoint`, `evaluate`, `ship` (package weights), `throughput`."""
