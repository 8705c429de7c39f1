"""Exact minibatch OT coupling (the OT-CFM hot path): the inner-product matrix has the same
optimal permutations as the squared distances, the result is the optimal permutation on
both solver routes, invariances, dtypes and shapes, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.optimize
import torch

from otgen.flows import ExactOTCoupling
from otgen.flows.couplings import assignment_cost, assignment_permutation
from otgen.ot.exact import prefer_assignment

D = torch.float64


def _batch(b: int, d: int, seed: int, dtype: torch.dtype = D) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, d, generator=g, dtype=D)
    x1 = torch.randn(b, d, generator=g, dtype=D) * 1.5 + 1.0
    return x0.to(dtype), x1.to(dtype)


def _sq(x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
    """|x0_i - x1_j|^2 in float64, (B, B)."""
    a, b = x0.double().reshape(len(x0), -1), x1.double().reshape(len(x1), -1)
    return ((a[:, None] - b[None]) ** 2).sum(-1).numpy()


def _opt_cost(C: np.ndarray) -> float:
    r, c = scipy.optimize.linear_sum_assignment(C)
    return float(C[r, c].sum())


def test_inner_product_matrix_differs_from_squared_distances_by_row_and_column_constants():
    # |a_i - b_j|^2 = |a_i|^2 + |b_j|^2 - 2 <a_i, b_j>: for every permutation the two costs
    # differ by the same constant sum_i |a_i|^2 + sum_j |b_j|^2
    x0, x1 = _batch(6, 3, 0)
    C = assignment_cost(x0, x1)
    S = _sq(x0, x1)
    np.testing.assert_allclose(C, -2 * x0.numpy() @ x1.numpy().T, rtol=0, atol=1e-12)
    const = float((x0**2).sum() + (x1**2).sum())
    for perm in itertools.permutations(range(6)):
        idx = (np.arange(6), np.array(perm))
        assert S[idx].sum() == pytest.approx(C[idx].sum() + const, abs=1e-9)


def test_brute_force_optimum_on_small_batches():
    # all 7! = 5040 permutations
    for seed in range(3):
        x0, x1 = _batch(7, 2, seed)
        _, y, j = ExactOTCoupling()(x0, x1)
        S = _sq(x0, x1)
        best = min(S[np.arange(7), list(p)].sum() for p in itertools.permutations(range(7)))
        assert S[np.arange(7), j.numpy()].sum() == pytest.approx(best, rel=1e-12)
        assert torch.equal(y, x1[j])


@pytest.mark.parametrize(("b", "d"), [(40, 2), (256, 2), (100, 3), (80, 20)])
def test_optimal_permutation_on_both_solver_routes(b, d):
    # (40, 2) and (80, 20): scipy's LSA; (256, 2), (100, 3): the network simplex
    x0, x1 = _batch(b, d, 1)
    x0c, y, j = ExactOTCoupling()(x0, x1)
    assert x0c is x0
    assert torch.equal(torch.sort(j).values, torch.arange(b))  # a permutation
    assert j.dtype == torch.int64
    S = _sq(x0, x1)
    assert S[np.arange(b), j.numpy()].sum() == pytest.approx(_opt_cost(S), rel=1e-12)
    assert torch.equal(y, x1[j])
    route = prefer_assignment(b, d)
    assert route == (b <= 64 or d >= 16)


def test_assignment_permutation_agrees_with_lsa_on_the_squared_distances():
    x0, x1 = _batch(200, 2, 3)
    sigma = assignment_permutation(assignment_cost(x0, x1), 2)
    S = _sq(x0, x1)
    assert S[np.arange(200), sigma].sum() == pytest.approx(_opt_cost(S), rel=1e-12)


def test_invariances():
    x0, x1 = _batch(120, 2, 4)
    _, _, j = ExactOTCoupling()(x0, x1)
    # translating either cloud adds row/column constants to the squared distances
    _, _, j_shift = ExactOTCoupling()(x0 + 3.0, x1 - torch.tensor([1.0, 2.0], dtype=D))
    S = _sq(x0, x1)
    assert S[np.arange(120), j_shift.numpy()].sum() == pytest.approx(
        S[np.arange(120), j.numpy()].sum(), rel=1e-12)
    # relabelling x1 relabels the partners
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(5))
    _, y_perm, _ = ExactOTCoupling()(x0, x1[perm])
    assert float(((x0 - y_perm) ** 2).sum()) == pytest.approx(
        float(((x0 - x1[j]) ** 2).sum()), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16,
                                   torch.bfloat16])
def test_dtypes_keep_the_caller_dtype(dtype):
    x0, x1 = _batch(90, 2, 6, dtype)
    x0c, y, j = ExactOTCoupling()(x0, x1)
    assert y.dtype == dtype and x0c.dtype == dtype
    S = _sq(x0, x1)
    assert S[np.arange(90), j.numpy()].sum() == pytest.approx(_opt_cost(S), rel=1e-9)


def test_image_shaped_and_non_contiguous_batches_are_flattened():
    g = torch.Generator().manual_seed(8)
    x0 = torch.randn(70, 2, 3, generator=g, dtype=D)
    x1 = torch.randn(3, 2, 70, generator=g, dtype=D).permute(2, 1, 0)  # non-contiguous
    _, y, j = ExactOTCoupling()(x0, x1)
    assert y.shape == (70, 2, 3)
    S = _sq(x0, x1)
    assert S[np.arange(70), j.numpy()].sum() == pytest.approx(_opt_cost(S), rel=1e-12)


def test_gradients_flow_through_the_paired_batch_and_inputs_are_untouched():
    x0, x1 = _batch(80, 2, 9)
    x0c, x1c = x0.clone(), x1.clone()
    x1.requires_grad_(True)
    _, y, j = ExactOTCoupling()(x0, x1)
    (y * torch.arange(2, dtype=D)).sum().backward()
    assert x1.grad is not None
    torch.testing.assert_close(x1.grad, torch.arange(2, dtype=D).expand(80, 2))
    assert torch.equal(x0, x0c) and torch.equal(x1.detach(), x1c)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["x0", "x1"])
def test_non_finite_input_names_the_argument(bad, which):
    x0, x1 = _batch(100, 2, 10)
    (x0 if which == "x0" else x1)[17, 1] = bad
    with pytest.raises(ValueError, match=f"`{which}` must be finite"):
        ExactOTCoupling()(x0, x1)


def test_shape_mismatch():
    x0, x1 = _batch(8, 2, 11)
    with pytest.raises(ValueError, match="one shape"):
        ExactOTCoupling()(x0, x1[:, :1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_input_route_pairs_the_same_rows_and_keeps_autograd(dtype):
    # plain CPU matrices take the NumPy gather, images and grad-tracking inputs take
    # index_select: same permutation, same paired rows, dtype kept, gradients flow
    x0, x1 = _batch(48, 4, 11, dtype)
    a0, a1, j = ExactOTCoupling()(x0, x1)
    assert a1.dtype == dtype and torch.equal(a0, x0) and torch.equal(a1, x1[j])
    _, i1, ji = ExactOTCoupling()(x0.reshape(48, 2, 2, 1), x1.reshape(48, 2, 2, 1))
    assert torch.equal(ji, j) and torch.equal(i1.reshape(48, 4), a1)
    leaf = x1.clone().requires_grad_(True)
    _, g1, jg = ExactOTCoupling()(x0, leaf)
    assert torch.equal(jg, j) and torch.equal(g1.detach(), a1)
    g1.sum().backward()
    assert leaf.grad is not None and torch.equal(leaf.grad, torch.ones_like(x1))
