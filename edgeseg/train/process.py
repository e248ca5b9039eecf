"""Where a training process sits (rank, world, device under torchrun), its log, and its seeds.

Shared by the engine (:mod:`edgeseg.train.engine`) and the data front ends, which need the process's place
before the model exists: rank 0 alone reads the validation data, and each rank draws its own share of the
batches.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from edgeseg.train.config import TrainConfig


@dataclass(frozen=True)
class Processes:
    """Where this process sits: the world size, its rank, and its device (DDP under torchrun)."""

    world: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def use_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, writes checkpoints and logs."""
        return self.rank == 0


def log(msg: str) -> None:
    """One line on stderr (the run's log)."""
    print(msg, file=sys.stderr, flush=True)


def start_processes(cfg: TrainConfig) -> Processes:
    """This process's place; joins the process group under torchrun, sets ``--threads`` and the seed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return Processes(world, rank, local_rank, device)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's random choices (``rank`` 0: shared by all processes, e.g. the order)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63)
