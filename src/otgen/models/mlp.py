r"""Multilayer perceptrons: a generic :class:`MLP` and the time-dependent
:class:`MLPVectorField` ``v(t, x[, cond])``.

``depth`` counts hidden layers (each a ``Linear`` followed by the activation):

    MLP(in, out, hidden=w, depth=L) = Linear(w, out) ∘ (act ∘ Linear(w, w))^{L-1}
                                      ∘ act ∘ Linear(in, w),

i.e. ``L + 1`` linear layers; ``depth=0`` is a single ``Linear(in, out)``.

``MLPVectorField(dim)`` with the defaults (``hidden=64, depth=3, activation="selu",
time_embedding="concat"``) is exactly TorchCFM's ``MLP(dim, w=64, time_varying=True)``
(Linear(dim+1, 64), SELU, Linear(64, 64), SELU, Linear(64, 64), SELU, Linear(64, dim)) fed
with ``[x, t]`` as TorchCFM's ``torch_wrapper`` does; it even has the same ``state_dict``
keys (``net.0.weight``, …, ``net.6.bias``), so TorchCFM weights load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import Tensor, nn

from otgen._validate import check_choice, check_int, check_tensor
from otgen.models.embeddings import SinusoidalTimeEmbedding, expand_time

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "MLP",
    "MLPVectorField",
    "count_parameters",
    "make_activation",
]

Activation = Literal["selu", "silu", "relu", "gelu", "tanh", "elu"]
TimeEmbedding = Literal["concat", "sinusoidal"]

#: Activation name → ``nn.Module`` class.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module from its name (one of :data:`ACTIVATIONS`).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]()


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` by
    default).

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class MLP(nn.Sequential):
    r"""Fully connected network ``(B, in_dim) -> (B, out_dim)``.

    ``depth`` hidden layers of width ``hidden``, each ``Linear`` then the activation, and
    a final ``Linear(hidden, out_dim)`` (see the module docstring). Layers are stored as
    an ``nn.Sequential`` (``self[0]`` is the first ``Linear``), which keeps ``state_dict``
    keys compatible with TorchCFM's ``MLP.net``. Default PyTorch initialisation.

    Args:
        in_dim: Input features, >= 1.
        out_dim: Output features, >= 1.
        hidden: Width of the hidden layers, >= 1.
        depth: Number of hidden layers, >= 0 (0: a single linear map).
        activation: One of ``"selu"``, ``"silu"``, ``"relu"``, ``"gelu"``, ``"tanh"``,
            ``"elu"``.

    Shapes:
        input ``(*, in_dim)``, output ``(*, out_dim)``.

    Example:
        >>> MLP(3, 2, hidden=8, depth=2)(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 64,
        depth: int = 3,
        activation: Activation | str = "selu",
    ) -> None:
        in_dim = check_int("in_dim", in_dim, minimum=1)
        out_dim = check_int("out_dim", out_dim, minimum=1)
        hidden = check_int("hidden", hidden, minimum=1)
        depth = check_int("depth", depth, minimum=0)
        check_choice("activation", activation, tuple(ACTIVATIONS))
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), make_activation(activation)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden, self.depth, self.activation = hidden, depth, activation

    def __getitem__(self, idx: slice | int) -> nn.Module:
        # nn.Sequential rebuilds slices with ``self.__class__(modules)``, which our
        # constructor does not accept; a slice of an MLP is a plain nn.Sequential.
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)


class MLPVectorField(nn.Module):
    r"""Time-dependent vector field ``v(t, x[, cond]) = MLP([x, τ(t)[, cond]])``.

    ``time_embedding`` chooses τ:

    - ``"concat"``: τ(t) = t, one extra input column (TorchCFM's ``time_varying=True``);
      ``time_dim`` is ignored. Input width ``dim + 1 + cond_dim``.
    - ``"sinusoidal"``: τ = :class:`~otgen.models.embeddings.SinusoidalTimeEmbedding`
      (``time_dim`` features, t scaled by 1000). Input width ``dim + time_dim + cond_dim``.

    With the defaults this is TorchCFM's ``MLP(dim, w=64, time_varying=True)`` (see the
    module docstring). Time 0 is the source, 1 the data.

    Args:
        dim: Dimension of x and of the output, >= 1.
        hidden: Hidden width, >= 1.
        depth: Number of hidden layers, >= 1 (3 as in TorchCFM).
        activation: Activation name (see :class:`MLP`).
        time_embedding: ``"concat"`` or ``"sinusoidal"``.
        time_dim: Sinusoidal features, >= 2 (only for ``"sinusoidal"``).
        cond_dim: Width of an optional conditioning vector (e.g. a one-hot label), >= 0.

    Shapes:
        ``t``: a float, a 0-d tensor or ``(B,)``; ``x``: ``(B, dim)``; ``cond``:
        ``(B, cond_dim)`` (required iff ``cond_dim > 0``); output ``(B, dim)``, dtype and
        device of ``x``.

    Example:
        >>> field = MLPVectorField(2)
        >>> field(0.5, torch.zeros(7, 2)).shape
        torch.Size([7, 2])
        >>> count_parameters(field)
        8706
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 3,
        activation: Activation | str = "selu",
        time_embedding: TimeEmbedding | str = "concat",
        time_dim: int = 16,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        depth = check_int("depth", depth, minimum=1)
        self.time_embedding = check_choice(
            "time_embedding", time_embedding, ("concat", "sinusoidal")
        )
        self.cond_dim = check_int("cond_dim", cond_dim, minimum=0)
        self.embed: SinusoidalTimeEmbedding | None = None
        if self.time_embedding == "sinusoidal":
            self.time_dim = check_int("time_dim", time_dim, minimum=2)
            self.embed = SinusoidalTimeEmbedding(self.time_dim)
        else:
            self.time_dim = 1
        in_dim = self.dim + self.time_dim + self.cond_dim
        self.net = MLP(in_dim, self.dim, hidden=hidden, depth=depth, activation=activation)

    def forward(self, t: Tensor | float, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Evaluate ``v(t, x[, cond])``; shapes in the class docstring."""
        x = check_tensor("x", x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"`x` must have shape (B, {self.dim}), got {tuple(x.shape)}; pass a batch "
                f"of {self.dim}-dimensional points (x.reshape(-1, {self.dim}))."
            )
        b = x.shape[0]
        tb = expand_time(t, b, x)  # (B,)
        feats = [x, tb[:, None] if self.embed is None else self.embed(tb)]
        if self.cond_dim:
            if cond is None:
                raise ValueError(
                    f"`cond` is required: this field was built with cond_dim="
                    f"{self.cond_dim}; pass a ({b}, {self.cond_dim}) tensor."
                )
            cond = check_tensor("cond", cond)
            if cond.shape != (b, self.cond_dim):
                raise ValueError(
                    f"`cond` must have shape ({b}, {self.cond_dim}), got "
                    f"{tuple(cond.shape)}; one conditioning row per point."
                )
            feats.append(cond.to(dtype=x.dtype, device=x.device))
        elif cond is not None:
            raise ValueError(
                "`cond` was given but this field was built with cond_dim=0; build it with "
                "cond_dim=K to condition on a (B, K) tensor, or drop `cond`."
            )
        return self.net(torch.cat(feats, dim=1))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, time_embedding={self.time_embedding!r}, "
            f"time_dim={self.time_dim}, cond_dim={self.cond_dim}"
        )
