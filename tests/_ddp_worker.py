"""Run by torchrun from test_distributed.py: the same distillation as the 1-process reference."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from distributed_case import train_case  # noqa: E402

from kdistill import TrainingInterrupted  # noqa: E402
from kdistill.engine.distributed import exit_process, setup_from_env  # noqa: E402

if __name__ == "__main__":
    world = setup_from_env()
    torch.set_num_threads(1)
    mode = sys.argv[2] if len(sys.argv) > 2 else "full"
    try:
        cache_dir = Path(sys.argv[1]) / "cache" if mode == "cached" else None
        distiller = train_case(Path(sys.argv[1]) / "run", stop_at=25 if mode == "interrupt" else None,
                               resume=mode == "resume", cache_dir=cache_dir)
    except TrainingInterrupted:
        exit_process(0)
    if world.is_main:
        torch.save(distiller.student.model.state_dict(), Path(sys.argv[1]) / "student.pt")
        torch.save(distiller.history, Path(sys.argv[1]) / "history.pt")
        torch.save(distiller.methods.state_dict(), Path(sys.argv[1]) / "methods.pt")
    exit_process(0)
