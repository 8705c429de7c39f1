"""Bad input gives a ValueError/TypeError naming the argument and the fix."""

from __future__ import annotations

import pytest
import torch

from otgen.ot import Sinkhorn, sinkhorn_divergence, solve, wasserstein

D = torch.float64
X = torch.randn(5, 2, dtype=D)
Y = torch.randn(6, 2, dtype=D)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(x=torch.tensor([[float("nan"), 0.0]] * 5, dtype=D)), ValueError,
         "`x` must be finite"),
        (dict(y=torch.full((6, 2), float("inf"), dtype=D)), ValueError, "`y` must be finite"),
        (dict(x=torch.randn(5, dtype=D)), ValueError,
         r"`x` must be a point cloud of shape \(n, d\)"),
        (dict(x=torch.randn(2, 3, 4, dtype=D)), ValueError, "shape"),
        (dict(x=torch.empty(0, 2, dtype=D)), ValueError, "at least 1 point"),
        (dict(y=torch.randn(6, 3, dtype=D)), ValueError, "same dimension"),
        (dict(x=[[0.0, 1.0]]), TypeError, "`x` must be a torch.Tensor"),
        (dict(x=torch.ones(5, 2, dtype=torch.int64)), TypeError, "floating-point"),
        (dict(y=torch.randn(6, 2, dtype=torch.float32)), TypeError, "dtype"),
        (dict(a=-torch.ones(5, dtype=D) / 5), ValueError, "`a` must be non-negative"),
        (dict(a=torch.zeros(5, dtype=D)), ValueError, "positive total mass"),
        (dict(a=torch.ones(4, dtype=D) / 4), ValueError, r"`a` must have shape \(5,\)"),
        (dict(b=torch.ones(6, dtype=D) / 3), ValueError, "balanced OT needs equal mass"),
        (dict(method="sinkhorn", eps=0.0), ValueError, "`eps` must be a finite number > 0"),
        (dict(method="sinkhorn", eps=-1.0), ValueError, "`eps`"),
        (dict(method="sinkhorn", eps=float("nan")), ValueError, "`eps`"),
        (dict(method="simplex"), ValueError, "`method` must be one of"),
        (dict(cost="manhattan"), ValueError, "`cost` must be"),
        (dict(method="exact", eps=0.1), ValueError, "applies to method='sinkhorn' only"),
    ],
)
def test_solve_rejects(kwargs, exc, match):
    args = dict(x=X, y=Y, a=None, b=None)
    args.update(kwargs)
    x, y, a, b = args.pop("x"), args.pop("y"), args.pop("a"), args.pop("b")
    with pytest.raises(exc, match=match):
        solve(x, y, a, b, **args)


def test_wrong_cost_callable_shape():
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        solve(X, Y, cost=lambda u, v: torch.zeros(2, 2, dtype=D))


def test_solver_config_errors():
    with pytest.raises(ValueError, match="not both"):
        Sinkhorn(eps=0.1, eps_rel=0.1)
    with pytest.raises(ValueError, match="`max_iter` must be >= 1"):
        Sinkhorn(max_iter=0)
    with pytest.raises(ValueError, match=r"`init\[0\] \(f\)` must be a tensor of shape"):
        solve(X, Y, method="sinkhorn", init=(torch.zeros(3, dtype=D), torch.zeros(6, dtype=D)))
    with pytest.raises(ValueError, match="`p` must be"):
        wasserstein(X, Y, p=0)
    with pytest.raises(ValueError, match="`eps`"):
        sinkhorn_divergence(X, Y, eps=-1.0)
