"""Multi-process training through torchrun (DistributedDataParallel over gloo, two CPU processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import REPO  # noqa: E402


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_torchrun_two_cpu_processes_over_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgeseg", "train", "--model", "ultralightunet-t", "--data", "synthetic:16",
           "--val", "synthetic:4", "--epochs", "2", "--img-size", "64", "--batch-size", "4", "--max-steps", "2",
           "--threads", "1", "--device", "cpu", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]  # rank 0 alone writes
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["recipe"]["world_size"] == 2 and ckpt["train_state"]["epoch"] == 2
    # each process took its own half of the data: 16 images / 2 ranks / batch 4 = 2 steps each
    assert res.stderr.count("epoch 2/2") == 1  # only rank 0 reports
