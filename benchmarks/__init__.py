"""Latency/accuracy harness: every artifact checked against the FP32 PyTorch reference."""
