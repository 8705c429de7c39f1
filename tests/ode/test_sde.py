"""SDE steppers: weak order (exact expectation over a three-point noise tree), strong order
against a fine reference on the same Brownian path, conventions and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from otgen.ode import (
    EulerMaruyama,
    StochasticHeun,
    euler_maruyama_step,
    sdeint,
    stochastic_heun_step,
)

D = torch.float64
LAM, G, X0, T = 1.0, 1.0, 1.0, 1.0


def drift(t, x):
    return -LAM * x


def diffusion(t, x):
    return torch.full_like(x, G)


def _weak_second_moment(step, k: int) -> float:
    """E[X_T^2] of the scheme with k steps, exactly: the increments take the values
    (-sqrt(3h), 0, sqrt(3h)) with probabilities (1/6, 2/3, 1/6) (Gaussian moments up to the
    fifth), and the 3^k paths are enumerated."""
    h = T / k
    vals = torch.tensor([-math.sqrt(3 * h), 0.0, math.sqrt(3 * h)], dtype=D)
    probs = torch.tensor([1 / 6, 2 / 3, 1 / 6], dtype=D)
    idx = (torch.arange(3**k)[:, None] // 3 ** torch.arange(k)) % 3  # (3^k, k): all paths
    w = probs[idx].prod(1)
    x = torch.full((idx.shape[0], 1), X0, dtype=D)
    for j in range(k):
        x = step(drift, diffusion, torch.tensor(j * h, dtype=D), x, h, vals[idx[:, j]][:, None])
    return float((w * x[:, 0] ** 2).sum())


def test_weak_order_euler_1_heun_2():
    exact = X0**2 * math.exp(-2 * LAM * T) + G**2 * (1 - math.exp(-2 * LAM * T)) / (2 * LAM)
    ks = [4, 8, 10]
    for step, order in ((euler_maruyama_step, 1.0), (stochastic_heun_step, 2.0)):
        errs = [abs(_weak_second_moment(step, k) - exact) for k in ks]
        slope = np.polyfit(np.log([T / k for k in ks]), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.25, (step.__name__, errs, slope)


def test_strong_order_one_on_the_same_brownian_path():
    g = torch.Generator().manual_seed(0)
    n, fine = 1000, 256
    hf = T / fine
    dw = torch.randn(n, fine, generator=g, dtype=D) * math.sqrt(hf)
    x0 = torch.full((n, 1), X0, dtype=D)

    def solve(stepper, k):
        x, r = x0, fine // k
        for j in range(k):
            inc = dw[:, j * r:(j + 1) * r].sum(1, keepdim=True)
            x = stepper.step(lambda t, x: -torch.sin(x), diffusion, torch.tensor(j * T / k),
                             x, T / k, inc)
        return x

    ref = solve(StochasticHeun(), fine)
    ks = [8, 16, 32]
    for stepper in (EulerMaruyama(), StochasticHeun()):
        errs = [float((solve(stepper, k) - ref).abs().mean()) for k in ks]
        slope = np.polyfit(np.log([T / k for k in ks]), np.log(errs), 1)[0]
        assert abs(slope - stepper.strong_order) < 0.25, (stepper.name, errs, slope)


def test_sdeint_reproducible_keeps_dtype_and_records_frames():
    x0 = torch.zeros(5, 3, dtype=torch.float32)
    r1 = sdeint((drift, diffusion), x0, steps=10, generator=torch.Generator().manual_seed(3),
                save_every=5, method="heun")
    r2 = sdeint((drift, diffusion), x0, steps=10, generator=torch.Generator().manual_seed(3),
                save_every=5, method="heun")
    assert torch.equal(r1.x, r2.x) and r1.x.dtype == torch.float32
    assert r1.xs is not None and r1.xs.shape == (3, 5, 3) and r1.nfe == 20
    assert r1.ts is not None and torch.allclose(r1.ts, torch.tensor([0.0, 0.5, 1.0]))


def test_backward_integration_uses_abs_dt_for_noise():
    # pure noise run backward from t=1 to t=0: variance G^2 * 1
    x0 = torch.zeros(20000, 1, dtype=D)
    res = sdeint((lambda t, x: torch.zeros_like(x), diffusion), x0, t0=1.0, t1=0.0, steps=4,
                 generator=torch.Generator().manual_seed(1))
    assert abs(float(res.x.var()) - 1.0) < 0.05


def test_sdeint_bad_input():
    with pytest.raises(TypeError, match="drift"):
        sdeint(42, torch.zeros(2, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`method` must be one of"):
        sdeint((drift, diffusion), torch.zeros(2, 1), method="milstein")
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        sdeint((drift, diffusion), torch.zeros(2, 1), steps=0)
    with pytest.raises(ValueError, match="finite"):
        sdeint((drift, diffusion), torch.tensor([[float("nan")]]))
