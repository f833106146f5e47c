"""DeepSpeed's CPU all-reduce leaves its shared-memory files behind; this removes them early.

On CPU ranks of one machine DeepSpeed maps one ``/dev/shm/deepspeed_allreduce_buffer_*`` file per rank
(64 MiB each) and never unlinks it, so every run, finished or killed, keeps RAM until the machine
restarts; a test suite of DeepSpeed launches filled a 24 GiB machine this way. A file is only needed
until every rank has mapped its peers' files, so each rank unlinks its own right after a barrier: the
mappings stay valid for the rest of the run, and a later ``kill -9`` leaks nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")


def allreduce_buffer(rank: int) -> Path:
    """This rank's file, named as DeepSpeed's ``shm_initialize`` names it (uid, master address and port)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return SHM_DIR / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def release_allreduce_buffer() -> Path | None:
    """Unlink this rank's all-reduce file once every rank has mapped it; return it when one was removed."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    dist.barrier()  # every rank is past DeepSpeed's init, so every peer file is mapped already
    path = allreduce_buffer(dist.get_rank())
    try:
        path.unlink()
    except FileNotFoundError:  # no shm op on this machine (GPU, or ranks on several hosts)
        return None
    logger.debug("unlinked %s (DeepSpeed keeps its mapping)", path)
    return path


class ReleaseAllreduceBuffer(TrainerCallback):
    """:func:`release_allreduce_buffer` once training begins: a one-rank DeepSpeed run initialises its
    communicator (and maps its file) only inside ``Trainer.train()``."""

    def on_train_begin(self, args, state, control, **kwargs):
        release_allreduce_buffer()
