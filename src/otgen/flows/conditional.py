r"""Class-conditional flow matching with label-aware minibatch couplings.

The conditional objective (seed 004, §6.5.3) regresses a field :math:`v_\theta(t, x, c)`
onto the conditional velocity of a path, with pairs drawn *given the class*:

.. math::
    \mathcal L(\theta) = \mathbb E_{c}\,\mathbb E_{t,\,(x_0, x_1) \sim \pi_c}
        \big\| v_\theta(t, x_t, \tilde c) - u_t(x_t \mid x_0, x_1) \big\|^2 ,

where :math:`\pi_c` couples the source :math:`p_0 = N(0, I)` with the class-conditional
data :math:`p_1(\cdot \mid c)`, and :math:`\tilde c` is :math:`c` or, with probability
``p_uncond`` (label dropout), the null class ∅, so the same network also learns the
unconditional field used by classifier-free guidance (:mod:`otgen.flows.guidance`).

Why the coupling must respect the label: a plain minibatch OT plan pairs each noise point
with the *nearest* data point of any class, so given the label :math:`c` of its partner the
noise :math:`x_0` is no longer distributed as :math:`p_0` but is biased toward the region
closest to class :math:`c`. Sampling then starts from :math:`x_0 \sim p_0` with a field that
was trained on other starting points (TorchCFM issues #117, #120, #132). The label-aware
couplings here fix that:

* :class:`WithinClassOTCoupling`: give the noise batch the data batch's label histogram
  (a uniformly random labelling: noise of class :math:`c` is a uniform random subset of
  i.i.d. noise, hence still :math:`\sim p_0`), then solve one exact assignment per class,
  :math:`\min_{\sigma_c} \sum_{i: c_{0,i} = c} |x_{0,i} - x_{1,\sigma_c(i)}|^2`. The
  result is a permutation that never crosses classes.
* :class:`ClassPenaltyOTCoupling`: one assignment on the penalised cost
  :math:`C_{ij} = |x_{0,i} - x_{1,j}|^2 + \lambda\,[c_{0,i} \ne c_{1,j}]`. ``λ = 0`` is plain
  minibatch OT; as λ grows the number of cross-class pairs decreases monotonically and for
  :math:`\lambda > \sum_i \max_j C_{ij} - \min_\sigma \sum_i C_{i\sigma(i)}` it is zero
  (then it equals the within-class coupling).
* :class:`LabelBlindCoupling` wraps any coupling of :mod:`otgen.flows.couplings`
  (independent or exact OT) and ignores the labels (the baselines).

Every coupling returns ``(x0, x1[j], y1[j], j)`` with ``j`` a permutation of the batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import Tensor

from otgen._validate import check_choice, check_finite, check_positive_or_none
from otgen.flows._losses import sq_error
from otgen.flows.couplings import AbstractCoupling, ExactOTCoupling, IndependentCoupling
from otgen.flows.matchers import FlowMatcher
from otgen.flows.paths import AbstractPath, LinearPath, PathSample
from otgen.models.conv import label_dropout
from otgen.ot.exact import _assign

__all__ = [
    "AbstractConditionalCoupling", "LabelBlindCoupling", "WithinClassOTCoupling",
    "ClassPenaltyOTCoupling", "ConditionalFlowMatcher", "ConditionalBatch",
    "assign_noise_labels", "make_conditional_matcher", "COUPLINGS",
]

#: names accepted by :func:`make_conditional_matcher` (and ``otgen train --coupling``)
COUPLINGS = ("independent", "ot", "label-ot", "label-penalty")


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _check(x0: Tensor, x1: Tensor, y1: Tensor) -> None:
    if x0.shape != x1.shape:
        raise ValueError(f"`x0` and `x1` must be batches of one shape, got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}; draw equal batch sizes.")
    if not isinstance(y1, Tensor) or y1.dtype not in (torch.int64, torch.int32) or \
            y1.shape != (x1.shape[0],):
        got = f"{y1.dtype} {tuple(y1.shape)}" if isinstance(y1, Tensor) else type(y1).__name__
        raise ValueError(f"`y1` must be int64 labels of shape ({x1.shape[0]},), one per row of "
                         f"`x1`, got {got}.")


def _sq_cost(a: Tensor, b: Tensor) -> Tensor:
    """``(n, m)`` float64 CPU matrix of squared distances between rows of ``a``, ``b``."""
    a64 = a.to(device="cpu", dtype=torch.float64)
    b64 = b.to(device="cpu", dtype=torch.float64)
    return torch.addmm((a64 * a64).sum(1, keepdim=True) + (b64 * b64).sum(1)[None],
                       a64, b64.T, alpha=-2.0).clamp_(min=0.0)


def assign_noise_labels(y1: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Labels for the noise batch: a uniformly random permutation of ``y1``.

    The noise batch gets exactly the data batch's label histogram; since the noise points
    are i.i.d., the points labelled :math:`c` are a uniform random subset and remain
    distributed as :math:`p_0`.

    Args:
        y1: Data labels ``(B,)`` int64.
        generator: CPU generator for the permutation.
    Returns:
        ``(B,)`` int64 on ``y1``'s device.
    """
    perm = torch.randperm(y1.shape[0], generator=generator)
    return y1[perm.to(y1.device)]


def _flat_with_noise_labels(x0: Tensor, x1: Tensor, y1: Tensor,
                            generator: torch.Generator | None
                            ) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened, finite-checked ``x0`` ``(B, d)`` and ``x1`` ``(B, d)``, and the noise
    labels ``c0`` ``(B,)`` on the CPU (:func:`assign_noise_labels`)."""
    a, b = _flat(x0), _flat(x1)
    check_finite("x0", a)
    check_finite("x1", b)
    return a, b, assign_noise_labels(y1, generator).cpu()


class AbstractConditionalCoupling(abc.ABC):
    """``coupling(x0, x1, y1, generator=None) -> (x0, x1[j], y1[j], j)``; ``j`` ``(B,)``
    is a permutation; the condition of pair ``i`` is ``y1[j[i]]``."""

    @abc.abstractmethod
    def pair(self, x0: Tensor, x1: Tensor, y1: Tensor,
             generator: torch.Generator | None) -> Tensor:
        """Index ``j`` ``(B,)`` of the partner of each ``x0[i]`` in ``x1``."""

    def __call__(self, x0: Tensor, x1: Tensor, y1: Tensor,
                 generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _check(x0, x1, y1)
        with torch.no_grad():
            j = self.pair(x0.detach(), x1.detach(), y1, generator)
        return x0, x1[j], y1[j], j


@dataclass(frozen=True)
class LabelBlindCoupling(AbstractConditionalCoupling):
    """Any label-blind coupling (default independent): the labels follow the data."""

    coupling: AbstractCoupling = field(default_factory=IndependentCoupling)

    def pair(self, x0: Tensor, x1: Tensor, y1: Tensor,
             generator: torch.Generator | None) -> Tensor:
        return self.coupling.pair(x0, x1, generator)


@dataclass(frozen=True)
class WithinClassOTCoupling(AbstractConditionalCoupling):
    r"""Exact minibatch OT (squared Euclidean) inside each class, as one permutation.

    The noise gets labels :func:`assign_noise_labels` (one draw from ``generator``); for
    each class :math:`c` the noise points labelled :math:`c` are matched to the data of
    class :math:`c` by an exact assignment. Cost: one assignment of size
    :math:`n_c` per class present.
    """

    def pair(self, x0: Tensor, x1: Tensor, y1: Tensor,
             generator: torch.Generator | None) -> Tensor:
        a, b, c0 = _flat_with_noise_labels(x0, x1, y1, generator)
        yc = y1.cpu()
        j = torch.empty(a.shape[0], dtype=torch.long)
        for c in torch.unique(yc).tolist():
            rows = torch.nonzero(c0 == c).flatten()  # noise of class c
            cols = torch.nonzero(yc == c).flatten()  # data of class c (same count)
            sigma = _assign(_sq_cost(a[rows.to(a.device)], b[cols.to(b.device)]), a.shape[1])
            j[rows] = cols[sigma.cpu()]
        return j.to(x0.device)


@dataclass(frozen=True)
class ClassPenaltyOTCoupling(AbstractConditionalCoupling):
    r"""Exact minibatch OT on :math:`|x_0 - x_1|^2 + \lambda [c_0 \ne c_1]` (a permutation).

    Args:
        penalty: Absolute λ >= 0 (``None``: ``penalty_rel`` times the mean squared
            distance of the batch).
        penalty_rel: Relative λ when ``penalty`` is ``None`` (default 1.0).
    """

    penalty: float | None = None
    penalty_rel: float = 1.0

    def __post_init__(self) -> None:
        if self.penalty is not None and not float(self.penalty) >= 0:
            raise ValueError(f"`penalty` must be >= 0 or None, got {self.penalty!r}.")
        check_positive_or_none("penalty_rel", self.penalty_rel)

    def pair(self, x0: Tensor, x1: Tensor, y1: Tensor,
             generator: torch.Generator | None) -> Tensor:
        a, b, c0 = _flat_with_noise_labels(x0, x1, y1, generator)
        C = _sq_cost(a, b)  # (B, B)
        lam = float(self.penalty) if self.penalty is not None else \
            self.penalty_rel * float(C.mean())
        C += lam * (c0[:, None] != y1.cpu()[None, :]).to(C.dtype)
        return _assign(C, a.shape[1]).to(x0.device)


@dataclass(frozen=True)
class ConditionalBatch:
    """One training step's draw: times ``t`` ``(B,)``, points ``xt`` and targets ``ut``
    ``(B, *D)``, the condition fed to the network ``c`` ``(B,)`` (null class where
    dropped), the true labels ``y`` ``(B,)`` of the partners, ``j`` and the path draw."""

    t: Tensor
    xt: Tensor
    ut: Tensor
    c: Tensor
    y: Tensor
    j: Tensor
    draw: PathSample


@dataclass(frozen=True)
class ConditionalFlowMatcher:
    r"""Class-conditional (OT-)CFM: a label-aware coupling, a path and label dropout.

    Args:
        path: Conditional probability path (default straight, noiseless).
        coupling: A conditional coupling (default :class:`WithinClassOTCoupling`).
        p_uncond: Label-dropout probability (classifier-free guidance), in ``[0, 1]``.
        null_class: Index of the null class (the network's ``n_classes``).
        t_range: Times drawn uniformly in ``[t_range[0], t_range[1]]``.
    Example:
        >>> m = ConditionalFlowMatcher(null_class=10)
        >>> b = m.sample(torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 1, 0, 2, 2]))
        >>> b.xt.shape, b.c.shape
        (torch.Size([6, 4]), torch.Size([6]))
    """

    path: AbstractPath = field(default_factory=lambda: LinearPath(0.0))
    coupling: AbstractConditionalCoupling = field(default_factory=WithinClassOTCoupling)
    p_uncond: float = 0.1
    null_class: int = 10
    t_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.p_uncond) <= 1.0:
            raise ValueError(f"`p_uncond` must be in [0, 1], got {self.p_uncond!r}.")

    def pair(self, x0: Tensor, x1: Tensor, y1: Tensor,
             generator: torch.Generator | None = None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Only the coupling: ``(x0, x1[j], y1[j], j)``."""
        return self.coupling(x0, x1, y1, generator)

    def sample(self, x0: Tensor, x1: Tensor, y1: Tensor,
               generator: torch.Generator | None = None, *,
               pairs: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> ConditionalBatch:
        """Couple, draw times and path points, drop labels. Draw order on ``generator``:
        coupling, times, path noise, label dropout."""
        x0, x1p, y, j = pairs if pairs is not None else self.pair(x0, x1, y1, generator)
        b = FlowMatcher(self.path, t_range=self.t_range).sample(
            x0, x1p, generator, pairs=(x0, x1p, torch.arange(x0.shape[0], device=x0.device)))
        c = label_dropout(y, self.p_uncond, self.null_class, generator)
        return ConditionalBatch(t=b.t, xt=b.xt, ut=b.ut, c=c, y=y, j=j, draw=b.draw)

    def loss(self, field: object, x0: Tensor, x1: Tensor, y1: Tensor, *,
             generator: torch.Generator | None = None,
             pairs: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
        r"""Mean over the batch of :math:`\|v(t, x_t, \tilde c) - u_t\|^2` (summed over
        the pixels), a scalar.

        Args:
            field: Network ``v(t, x, c)`` with ``c`` int64 ``(B,)``.
            x0, x1: Noise and data batches ``(B, *D)``; y1: data labels ``(B,)``.
            generator: Randomness of the coupling, times, path noise and dropout.
            pairs: Precomputed coupling (see :meth:`pair`).
        """
        b = self.sample(x0, x1, y1, generator, pairs=pairs)
        v = field(b.t, b.xt, b.c)  # type: ignore[operator]
        return sq_error(v, b.ut)


def make_conditional_matcher(coupling: str = "label-ot", *, sigma: float = 0.0,
                             p_uncond: float = 0.1, null_class: int = 10,
                             penalty: float | None = None) -> ConditionalFlowMatcher:
    """Build a conditional objective on the straight path with noise ``sigma``.

    ``coupling``: ``"independent"`` (conditional I-CFM), ``"ot"`` (label-blind minibatch
    OT-CFM), ``"label-ot"`` (exact OT within each class), ``"label-penalty"`` (OT with
    the class-mismatch penalty ``penalty``, default the mean squared distance).
    """
    check_choice("coupling", coupling, COUPLINGS)
    if not sigma >= 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma!r}.")
    cp: AbstractConditionalCoupling
    if coupling == "independent":
        cp = LabelBlindCoupling(IndependentCoupling())
    elif coupling == "ot":
        cp = LabelBlindCoupling(ExactOTCoupling())
    elif coupling == "label-ot":
        cp = WithinClassOTCoupling()
    else:
        cp = ClassPenaltyOTCoupling(penalty=penalty)
    return ConditionalFlowMatcher(LinearPath(float(sigma)), cp, p_uncond=p_uncond,
                                  null_class=null_class)
