r"""Data-parallel training across processes (``torchrun``) with a *global* OT coupling.

Launch exactly as for any PyTorch job::

    torchrun --nproc_per_node=2 -m otgen train --steps 2000 --out runs/ddp
    # several machines: the same command on each, plus
    #   --nnodes=2 --node_rank=K --rdzv_backend=c10d --rdzv_endpoint=HOST:29500

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``;
:func:`context` reads them and joins the process group (gloo on the CPU, NCCL on CUDA).
Without them everything runs in one process and nothing here changes the result.

What each rank does per step (``B = --batch-size`` per rank, ``R`` ranks):

1. draws its own noise and data batches ``x0_r, x1_r`` of size ``B`` from streams seeded by
   ``(seed, rank)`` (rank 0 keeps the single-process streams, so ranks never repeat);
2. for batch couplings (exact / entropic OT) all-gathers them into the global batches
   ``X0 = [x0_0; ...; x0_{R-1}]``, ``X1`` of size ``R B`` and solves **one** coupling
   :math:`\sigma = \arg\min_\sigma \sum_i |X0_i - X1_{\sigma(i)}|^2` (identically on every
   rank: the solver is deterministic and the coupling stream is shared), then trains on its
   slice ``(X0[rB:(r+1)B], X1[\sigma[rB:(r+1)B]])``: the pairs are those of a single
   process with batch ``R B`` (TorchCFM couples each rank's batch on its own instead, which
   biases OT-CFM as ``R`` grows);
3. all-reduces the gradients (mean over ranks, one flat buffer that also carries the loss)
   so every rank applies the same Adam step to identical weights.

Rank 0 alone shows the progress bar and writes checkpoints, weights and metrics; the
checkpoint holds every rank's random streams (gathered), so ``--resume`` continues each rank
where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistContext", "context", "rank_stream_seed", "shutdown"]


def rank_stream_seed(seed: int, stream: int, rank: int) -> int:
    """Seed of random stream number ``stream`` on ``rank``: rank 0 keeps the single-process
    seed ``1000 seed + stream``; other ranks are offset by a large prime times the rank."""
    return seed * 1000 + stream + 1_000_003 * rank


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: ``rank`` of ``world`` processes, and its device.

    ``world == 1`` means no process group: every method is then the identity.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, x: Tensor) -> Tensor:
        """Concatenate equal-shape ``(B, ...)`` tensors of all ranks, in rank order:
        ``(R B, ...)``. Identity in one process."""
        if not self.active:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    def local(self, x: Tensor) -> Tensor:
        """This rank's slice ``x[rB:(r+1)B]`` of a gathered ``(R B, ...)`` tensor."""
        if not self.active:
            return x
        b = x.shape[0] // self.world
        return x[self.rank * b : (self.rank + 1) * b]

    def average_grads(self, params: Iterable[torch.nn.Parameter], loss: Tensor) -> float:
        """All-reduce the gradients to their mean over ranks (in place) together with the
        loss, in one flat buffer; returns the mean loss over ranks as a float."""
        if not self.active:
            return float(loss.detach())
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([gr.reshape(-1) for gr in grads]
                         + [loss.detach().reshape(1).to(grads[0])])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for gr in grads:
            n = gr.numel()
            gr.copy_(flat[offset : offset + n].view_as(gr))
            offset += n
        return float(flat[-1])

    def gather_states(self, states: dict[str, Tensor]) -> dict[str, Tensor]:
        """Generator states of every rank, named ``name`` (rank 0) and ``name.rankR``
        (others), for the checkpoint. Collective: call on every rank."""
        if not self.active:
            return dict(states)
        dev = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
        out: dict[str, Tensor] = {}
        for name in sorted(states):  # NCCL moves CUDA tensors only
            parts = self.gather(states[name][None].to(dev)).cpu()  # (R, state_bytes) uint8
            for r in range(self.world):
                out[name if r == 0 else f"{name}.rank{r}"] = parts[r].clone()
        return out

    def own_name(self, name: str) -> str:
        """The checkpoint name of this rank's stream ``name``."""
        return name if self.rank == 0 else f"{name}.rank{self.rank}"

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def context(device: str = "cpu") -> DistContext:
    """The process group of a ``torchrun`` job (joined on first call), or a single process.

    Args:
        device: ``"cpu"`` → gloo; ``"cuda..."`` → NCCL on ``cuda:LOCAL_RANK``.
    Raises:
        ValueError: ``WORLD_SIZE``/``RANK`` malformed, or CUDA asked for but missing.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"WORLD_SIZE / RANK / LOCAL_RANK must be integers: {err}; launch "
                         "with torchrun.") from err
    if world <= 1:
        return DistContext()
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world}); launch with "
                         "torchrun.")
    if not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise ValueError("`device` is CUDA but CUDA is not available; use --device cpu"
                                 " (gloo) for CPU processes.")
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(rank=rank, world=world, local_rank=local)


def shutdown() -> None:
    """Leave the process group (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
