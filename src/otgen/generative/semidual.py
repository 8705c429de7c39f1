r"""Semi-discrete dual of :math:`W_c(g_\theta\#\zeta, \nu)` (seed note 003, dual option 1).

For data :math:`\nu = \sum_j b_j \delta_{y_j}` keep one dual weight per data point,
:math:`\tilde h \in \mathbb R^n`, and let the potential on the generator side be its
c-transform :math:`h = \tilde h^c`, :math:`\tilde h^c(x) = \min_j c(x, y_j) - \tilde h_j`
(:func:`otgen.ot.c_transform`). The semi-dual

.. math::
    F(\tilde h, \theta) = \mathbb E_{z \sim \zeta}\big[\tilde h^c(g_\theta(z))\big]
        + \sum_j b_j \tilde h_j \;\le\; W_c(g_\theta\#\zeta, \nu)

is concave in :math:`\tilde h` with equality at the maximiser. Training alternates

* **ascent on** :math:`\tilde h` along the unbiased stochastic supergradient
  :math:`\partial F / \partial \tilde h_j = b_j - \hat\mu_\theta(L_j(\tilde h))`, the target
  mass minus the share of generated points in the Laguerre cell of :math:`y_j`
  (:func:`otgen.ot.semidiscrete.cell_masses`), and
* **descent on** θ along :math:`\nabla_\theta F = \mathbb E_z[\partial_\theta
  g_\theta(z)]^\top \nabla \tilde h^c(g_\theta(z))` with :math:`\nabla \tilde h^c(x) =
  \nabla_x c(x, y_{j^\star(x)})` (autograd of the c-transform through its argmin; for
  :math:`c = |x - y|^2` this is :math:`2(x - y_{j^\star})`). By the envelope theorem it is the
  gradient of :math:`W_c` itself when :math:`\tilde h` is optimal (checked against finite
  differences of exact OT in the tests).

:math:`F` on fresh generated samples is reported during training as an estimate (a lower
bound in expectation at the current θ) of :math:`W_c`; for the squared Euclidean cost that is
:math:`W_2^2`.

Example:
    >>> y = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> dual = SemiDual(y)
    >>> float(dual.value(torch.tensor([[0.1], [0.8]], dtype=torch.float64)))
    0.025
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from otgen._validate import as_points, as_weights, check_positive, check_same_dim
from otgen.ot import c_transform
from otgen.ot.costs import AbstractCost, get_cost
from otgen.ot.semidiscrete import cell_masses

__all__ = ["SemiDual"]


class SemiDual(nn.Module):
    r"""The dual vector :math:`\tilde h` on fixed atoms and the maps built from it.

    Args:
        y: Atoms (the data points), shape ``(n, d)``; stored as a buffer.
        b: Atom weights ``(n,)`` summing to 1 (default uniform).
        cost: Ground cost (name or :class:`~otgen.ot.costs.AbstractCost`).
        auction: In :meth:`ascent_step`, let a cell that got no sample and lies far from
            every generated point (capture deficit above three gaps) jump by η × that
            deficit, as bids in an auction do. Faster to reach far atoms, but in generator
            training on moons it made the generator drift (off by default).
    Attributes:
        h: ``nn.Parameter`` of shape ``(n,)``, initialised to 0 (the nearest-atom
            assignment). Optimise it with any torch optimiser after :meth:`set_ascent_grad`
            (which writes the *negated* supergradient, so a minimiser ascends ``F``).
    Shapes:
        ``potential``: ``(B, d) -> (B,)``; ``value`` / ``generator_loss``: ``(B, d) -> ()``.
    """

    y: Tensor
    b: Tensor

    def __init__(self, y: Tensor, b: Tensor | None = None, *,
                 cost: AbstractCost | str = "sqeuclidean", auction: bool = False) -> None:
        super().__init__()
        self.auction = bool(auction)
        y = as_points("y", y).detach()
        b = as_weights("b", b, y.shape[0], y).detach()
        mass = float(b.sum())
        if abs(mass - 1.0) > 1e-5:
            raise ValueError(f"`b` must sum to 1 (a probability measure), got {mass:.6g}; "
                             "pass b / b.sum().")
        self.register_buffer("y", y.clone())
        self.register_buffer("b", b.clone())
        self.cost = get_cost(cost)
        self.h = nn.Parameter(torch.zeros_like(b))

    def _points(self, x: Tensor) -> Tensor:
        x = as_points("x", x)
        check_same_dim(x, self.y)
        return x

    def potential(self, x: Tensor) -> Tensor:
        r""":math:`\tilde h^c(x_i) = \min_j c(x_i, y_j) - \tilde h_j` ``(B,)``, differentiable in
        ``x`` (through the argmin) and in :math:`\tilde h`."""
        return c_transform(self.h, self._points(x), self.y, cost=self.cost)

    def value(self, x: Tensor) -> Tensor:
        r"""Semi-dual estimate :math:`F = \frac1B\sum_i \tilde h^c(x_i) + \langle b,
        \tilde h\rangle` on generated ``x`` ``(B, d)``, shape ``()`` (detached)."""
        with torch.no_grad():
            return self.potential(x).mean() + self.b @ self.h

    def supergradient(self, x: Tensor) -> Tensor:
        r""":math:`b - \hat\mu(L(\tilde h))` ``(n,)`` from generated samples ``x`` ``(B, d)``."""
        x = self._points(x).detach()
        return self.b - cell_masses(x, self.y, self.h.detach(), self.cost)

    def set_ascent_grad(self, x: Tensor) -> Tensor:
        r"""Write ``-supergradient(x)`` into ``h.grad`` (so a torch optimiser's ``step()``
        ascends :math:`F`); returns the supergradient ``(n,)``. Prefer :meth:`ascent_step`
        when there are many atoms: with :math:`n \gg` batch most cells get no sample, and
        Adam's per-coordinate normalisation turns their constant gradient :math:`b_j` into
        full-size steps."""
        grad = self.supergradient(x)
        self.h.grad = -grad
        return grad

    @torch.no_grad()
    def ascent_step(self, x: Tensor, lr: float = 1.0) -> tuple[Tensor, float]:
        r"""One stochastic ascent step on generated ``x`` ``(B, d)``:

        .. math::
            \tilde h_j \leftarrow \tilde h_j + \eta\,\bar\Delta\,
            \frac{b_j - \hat\mu(L_j)}{\max(b_j, \hat\mu(L_j))},

        with :math:`\bar\Delta` the mean over the batch of the gap between the two smallest
        :math:`c(x_i, y_j) - \tilde h_j`. Near the optimum (:math:`\hat\mu \approx b`) this
        is a Newton-like step (the mass of cell ``j`` changes by about
        :math:`b_j \delta\tilde h_j / \bar\Delta`); dividing by :math:`\max(b_j, \hat\mu_j)`
        makes it independent of the number of atoms and bounds every coordinate's move by
        :math:`\eta\bar\Delta`. (Dividing by :math:`b_j` alone makes overloaded cells drop by
        :math:`\hat\mu_j / b_j` gaps, which widens the gaps and diverges when the generator
        starts collapsed; so does Adam on the raw supergradient, which turns the constant
        gradient :math:`b_j` of the many empty cells into full-size steps.) ``h`` is kept
        centred (``F`` is invariant to constants).

        Args:
            x: Generated points ``(B, d)`` (detached).
            lr: η > 0 (1 to 2 is stable; larger is noisier).
        Returns:
            ``(supergradient (n,), step)`` with ``step`` = :math:`\eta\bar\Delta`.
        """
        lr = check_positive("lr", lr)
        x = self._points(x).detach()
        y, h, n = self.y, self.h, self.y.shape[0]
        masses = torch.zeros_like(self.b)
        deficit = torch.full_like(self.b, torch.inf)  # (n,) rise that captures a point
        gap = x.new_zeros(())
        rows = max(1, (1 << 22) // max(n, 1))
        for s in range(0, x.shape[0], rows):
            red = self.cost(x[s:s + rows], y) - h  # (rows, n)
            if n > 1:
                two = torch.topk(red, 2, dim=1, largest=False)
                gap += (two.values[:, 1] - two.values[:, 0]).sum()
                idx = two.indices[:, 0]
                deficit = torch.minimum(deficit, (red - two.values[:, :1]).min(dim=0).values)
            else:
                idx = red.argmin(dim=1)
            masses += torch.bincount(idx, minlength=n).to(masses.dtype)
        masses /= x.shape[0]
        grad = self.b - masses
        step = lr * float(gap) / x.shape[0]
        if step > 0:
            move = grad / torch.maximum(self.b, masses).clamp_min(torch.finfo(h.dtype).tiny)
            move = move * step  # (n,), in [-step, step]
            if self.auction:
                empty = masses == 0
                far = lr * (deficit[empty] - 3.0 * step / lr).clamp(0.0, 1e30)
                move[empty] = torch.maximum(move[empty], far)
            h.add_(move)
            h.sub_(h.mean())
        return grad, step

    def generator_loss(self, x: Tensor) -> Tensor:
        r"""Generator objective :math:`\frac1B\sum_i \tilde h^c(x_i)` with :math:`\tilde h`
        held fixed, shape ``()``; its gradient in ``x_i`` is :math:`\nabla_x c(x_i,
        y_{j^\star(x_i)}) / B`."""
        return c_transform(self.h.detach(), self._points(x), self.y, cost=self.cost).mean()
