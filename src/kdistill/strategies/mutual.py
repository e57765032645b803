"""Deep mutual learning (Zhang, Xiang, Hospedales, Lu 2018, arXiv:1706.00384): peers teach each other.

Two or more students train together from scratch, in the one training loop, with no pretrained
teacher. Peer k's loss is

    L_k = ce_weight * CE(z_k, y) + kl_weight * mean_{j != k} KL(p_j.detach() || p_k) * T^2

with p = softmax(z / T) (T = 1 in the paper, where the T^2 factor is 1). The other peers'
distributions are constants in L_k, so the summed loss sum_k L_k gives peer k exactly the gradient
of its own L_k: one backward pass updates every peer as if each had been stepped on its own loss.
(The paper updates the peers one after the other within a step, each against the others' current
predictions; updating them together from one forward pass is the usual implementation and costs
one forward per peer instead of P.)

How it fits the loop: the peers are wrapped in a `Cohort` (submodules `peers.0`, `peers.1`, ...)
that is the Distiller's student. `Cohort.forward` returns peer 0's logits (or, with
`output="mean"`, the ensemble's log-probabilities), which is what the loop reports as the
student's training accuracy and what `Distiller.evaluate` scores; the `MutualLearning` method reads
every peer's logits through taps on `peers.k` (the toolkit's standard way to reach intermediate
outputs, removed when training ends). The exported cohort holds all peers; take one out with
`cohort.peers[k]`.

    cohort = Cohort([make_student() for _ in range(2)])
    Distiller(None, cohort, [MutualLearning(peers=2)]).fit(train, val, epochs=30)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.engine import Distiller
from kdistill.engine.batch import logits_of
from kdistill.engine.seed import derive_seed
from kdistill.methods import METHODS
from kdistill.methods.base import Method, StepContext, require_non_negative, require_positive
from kdistill.methods.logits import softened_kl
from kdistill.strategies.stages import fit_or_load

OUTPUTS = ("first", "mean")


class Cohort(nn.Module):
    """Peers trained together; the forward pass runs every peer on the same inputs.

    Returns peer 0's logits (`output="first"`, default) or the log of the mean of the peers'
    probabilities (`output="mean"`: the cohort as an ensemble). `peer_logits(x)` gives all of them
    stacked (P, B, C).
    """

    def __init__(self, peers: Sequence[nn.Module], output: str = "first") -> None:
        super().__init__()
        peers = list(peers)
        if len(peers) < 2:
            raise ValueError(f"a cohort needs at least 2 peers (got {len(peers)})")
        if output not in OUTPUTS:
            raise ValueError(f"output: must be one of {', '.join(OUTPUTS)} (got {output!r})")
        self.peers = nn.ModuleList(peers)
        self.output = output

    def _all(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        return [logits_of(peer(*args, **kwargs)) for peer in self.peers]

    def peer_logits(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.stack(self._all(*args, **kwargs))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        logits = self._all(*args, **kwargs)
        if self.output == "first":
            return logits[0]
        log_p = torch.stack([F.log_softmax(z.float(), dim=1) for z in logits])
        return torch.logsumexp(log_p, dim=0) - torch.log(torch.tensor(float(len(logits)), device=log_p.device))


class MutualLearning(Method):
    """Deep mutual learning: each peer's CE with the labels plus its mean KL to the other peers (detached).

    Returns the terms `ce0`, `kl0`, `ce1`, `kl1`, ... (already multiplied by `ce_weight` /
    `kl_weight`; the method's `weight` multiplies all of them). `peers` must equal the cohort's
    size: the method taps `{prefix}.0` ... `{prefix}.{peers-1}` on the student.
    """

    name = "mutual"
    summary = "deep mutual learning: peers trained together, each with CE + KL to the others' (detached) outputs"
    reference = "Zhang, Xiang, Hospedales, Lu 2018, Deep Mutual Learning (arXiv:1706.00384)"
    needs_teacher = False
    needs_labels = True
    uses_logits = True
    supervises_labels = True

    def __init__(self, weight: float = 1.0, peers: int = 2, temperature: float = 1.0, kl_weight: float = 1.0,
                 ce_weight: float = 1.0, prefix: str = "peers") -> None:
        super().__init__(weight)
        if not isinstance(peers, int) or isinstance(peers, bool) or peers < 2:
            raise ValueError(f"peers: must be an integer >= 2 (got {peers!r})")
        require_positive("temperature", temperature)
        require_non_negative("kl_weight", kl_weight)
        require_non_negative("ce_weight", ce_weight)
        if not isinstance(prefix, str) or not prefix.strip():
            raise ValueError(f"prefix: must be the cohort's module path of the peers list (got {prefix!r})")
        self.peers = peers
        self.temperature = float(temperature)
        self.kl_weight = float(kl_weight)
        self.ce_weight = float(ce_weight)
        self.prefix = prefix.strip()

    def student_taps(self) -> list[str]:
        return [f"{self.prefix}.{k}" for k in range(self.peers)]

    def peer_logits(self, ctx: StepContext) -> list[torch.Tensor]:
        return [logits_of(ctx.student_features[tap]).float() for tap in self.student_taps()]

    def loss_terms(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.labels is None:
            raise RuntimeError("mutual needs labels, but the batch has none")
        logits = self.peer_logits(ctx)
        terms: dict[str, torch.Tensor] = {}
        for k, z in enumerate(logits):
            kl = sum(softened_kl(z, other.detach(), self.temperature) for j, other in enumerate(logits) if j != k)
            terms[f"ce{k}"] = self.ce_weight * F.cross_entropy(z, ctx.labels)
            terms[f"kl{k}"] = self.kl_weight * kl / (len(logits) - 1)
        return terms

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, peers={self.peers}, temperature={self.temperature}, "
                f"kl_weight={self.kl_weight}, ce_weight={self.ce_weight}")


METHODS.register("mutual", "dml", "deep_mutual_learning")(MutualLearning)


def mutual_learning(
    make_peers: Sequence[Callable[[], nn.Module]] | Callable[[], nn.Module],
    train: Any,
    val: Any = None,
    epochs: int = 10,
    *,
    peers: int = 2,
    temperature: float = 1.0,
    kl_weight: float = 1.0,
    extra_methods: Sequence[Method] = (),
    run_dir: str | Path | None = None,
    resume: bool = False,
    distiller_kwargs: dict[str, Any] | None = None,
) -> tuple[Cohort, Distiller]:
    """Train a cohort from scratch by mutual learning; returns the cohort and its Distiller.

    `make_peers` is one factory per peer, or one factory called `peers` times (each peer is seeded
    from (seed, peer index), so peers start different and reruns agree). With `run_dir` and
    `resume`, an interrupted run continues from its checkpoint, and a finished one is loaded.
    """
    kwargs = dict(distiller_kwargs or {})
    seed = int(kwargs.get("seed", 0))
    factories = list(make_peers) if isinstance(make_peers, list | tuple) else [make_peers] * peers
    models = []
    for k, factory in enumerate(factories):
        torch.manual_seed(derive_seed(seed, 2000 + k))
        models.append(factory())
    cohort = Cohort(models)
    methods = [MutualLearning(peers=len(models), temperature=temperature, kl_weight=kl_weight), *extra_methods]
    distiller = Distiller(None, cohort, methods, run_dir=run_dir, **kwargs)
    record = {"teacher": None, "teacher_weights": None, "epochs": epochs, "methods": [m.name for m in methods],
              "seed": seed, "peers": len(models)}
    fit_or_load(run_dir, cohort, lambda: distiller, train, val, epochs, resume=resume, record=record)
    return cohort, distiller


__all__ = ["Cohort", "MutualLearning", "mutual_learning"]
