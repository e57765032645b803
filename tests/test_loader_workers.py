"""DataLoader workers under kdistill's loaders.

A stop that reaches the training process's group while a DataLoader worker is starting (before its
`worker_init_fn` takes it out of the group) must not kill the worker: the run would fail with
"DataLoader worker exited unexpectedly" instead of checkpointing. CI hit this window once (a 2-process
run stopped with SIGTERM while the ranks forked their evaluation workers); here it is hit every time,
by sending the stop from inside the window."""

import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from multiprocessing.process import BaseProcess

import pytest
import torch

from kdistill import Distiller
from kdistill.methods import HardLabel
from kdistill.models import build_model

SCRIPT = textwrap.dedent("""
    import os, signal, time
    import torch
    from torch.utils.data import TensorDataset
    from kdistill.engine import loaders
    from kdistill.engine.distributed import World

    leave_group = loaders.own_process_group

    def stop_in_the_window(worker_id):
        os.killpg(os.getpgid(0), signal.SIGTERM)  # as torchrun's agent does, to the whole group
        time.sleep(0.3)
        leave_group(worker_id)

    loaders.own_process_group = stop_in_the_window
    stops = []
    signal.signal(signal.SIGTERM, lambda *_: stops.append(1))
    data = TensorDataset(torch.arange(64.0).view(32, 2), torch.arange(32))
    for train in (False, True):
        loader = loaders.make_loader(data, train=train, batch_size=8, eval_batch_size=8, seed=0, world=World(),
                                     device=torch.device("cpu"), num_workers=1)
        seen = sorted(int(label) for _, labels in loader for label in labels)
        assert seen == list(range(32)), seen
    print("batches complete, stops received:", len(stops))
""")


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask") or not hasattr(os, "killpg"), reason="POSIX signals")
def test_a_stop_while_a_worker_starts_reaches_the_parent_not_the_worker():
    # a session of its own: the stop goes to this child's group only, never to pytest's or CI's
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                          start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batches complete, stops received: 2" in done.stdout, done.stdout + done.stderr[-2000:]


def test_evaluation_reuses_its_workers_across_epochs(digits, monkeypatch):
    """Each epoch-end evaluation used to fork new workers (a fork that could hang in CPython's
    after-fork code while the last loader's threads ended); now they are forked once per data set,
    and the evaluation gives what it gives without workers."""
    bundle, train, val = digits
    started = []
    start = BaseProcess.start
    monkeypatch.setattr(BaseProcess, "start", lambda process: (started.append(process), start(process))[1])
    records = {}
    for workers in (0, 1):
        torch.manual_seed(0)
        student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
        distiller = Distiller(None, student, [HardLabel()], batch_size=64, seed=0, progress=False,
                              num_workers=workers, student_normalization=(bundle.mean, bundle.std))
        records[workers] = distiller.fit(train.subset(torch.arange(256)), val, epochs=3)
        starts_in_fits = len(started)
        if workers:  # kept for the length of a fit only: a fit's end takes the workers down
            assert distiller.make_loader(val, train=False) is not distiller.make_loader(val, train=False)
            distiller.evaluation_loaders.open(val, partial(distiller.make_loader, val, train=False), workers)
            assert distiller.make_loader(val, train=False) is distiller.make_loader(val, train=False)
            assert distiller.make_loader(train, train=True) is not distiller.make_loader(train, train=True)
            # only the validation set's: a cache build's pass over the training set keeps no workers
            assert distiller.make_loader(train, train=False) is not distiller.make_loader(train, train=False)
            distiller.evaluation_loaders.close()
    assert starts_in_fits == 2, started  # one training worker, one evaluation worker, for three evaluations
    assert [(r["val/acc"], r["val/loss"]) for r in records[0]] == [(r["val/acc"], r["val/loss"]) for r in records[1]]
