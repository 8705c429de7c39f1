"""Score diffusion: score <-> velocity exact on Gaussians, PF-ODE transport and likelihood
against closed forms, reverse SDE, DSM training, ``otgen train --method diffusion``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from otgen.cli.main import main
from otgen.flows.diffusion import (
    DiffusionMatcher,
    EpsScore,
    LinearSchedule,
    ProbabilityFlowField,
    VPSchedule,
    probability_flow_log_likelihood,
    probability_flow_sample,
    reverse_sde_sample,
    score_to_velocity,
    velocity_to_score,
)
from otgen.flows.matchers import make_matcher
from otgen.gradflows import VPSDE
from otgen.models import MLPVectorField
from otgen.train import TrainConfig, train

D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


M = torch.tensor([1.0, -0.5], dtype=D)
_L = torch.tensor([[0.5, 0.0], [0.3, 0.2]], dtype=D)
S = _L @ _L.T  # data N(M, S)
I2 = torch.eye(2, dtype=D)


def _cov(sched, t):
    a, s, _, _ = sched.coefficients(torch.as_tensor(t, dtype=D))
    return a, s, a * a * S + s * s * I2


def _exact_score(sched):
    def score(t, x):  # t: () or (B,)
        a, s, _, _ = sched.coefficients(torch.as_tensor(t, dtype=D).expand(x.shape[0]))
        C = a[:, None, None] ** 2 * S + s[:, None, None] ** 2 * I2  # (B, 2, 2)
        return -torch.linalg.solve(C, (x - a[:, None] * M)[..., None])[..., 0]
    return score


def _exact_velocity(sched, t, x):
    """Marginal velocity of x_t = a x1 + s x0, x1 ~ N(M, S): da M + (a da S + s ds I) C^-1
    (x - a M)."""
    a, s, da, ds = sched.coefficients(torch.as_tensor(t, dtype=D))
    C = a * a * S + s * s * I2
    return da * M + ((a * da * S + s * ds * I2) @ torch.linalg.solve(C, (x - a * M).T)).T


@pytest.mark.parametrize("sched", [VPSchedule(), VPSchedule(VPSDE("cosine")),
                                   LinearSchedule()], ids=["vp-linear", "vp-cosine", "linear"])
def test_score_velocity_conversion_is_exact_on_gaussians(sched, gen):
    x = torch.randn(50, 2, generator=gen, dtype=D)
    for t in (0.1, 0.5, 0.9):
        tt = torch.tensor(t, dtype=D)
        s = _exact_score(sched)(tt, x)
        v = score_to_velocity(s, x, tt, sched)
        torch.testing.assert_close(v, _exact_velocity(sched, tt, x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(velocity_to_score(v, x, tt, sched), s, rtol=1e-9,
                                   atol=1e-10)
    tb = torch.full((50,), 0.3, dtype=D)  # per-sample times broadcast the same way
    torch.testing.assert_close(score_to_velocity(_exact_score(sched)(0.3, x), x, tb, sched),
                               _exact_velocity(sched, 0.3, x))


def test_pf_field_is_the_vp_velocity_and_transports_exactly(gen):
    sde, t_eps = VPSDE(), 1e-3
    sched = VPSchedule(sde)
    score = _exact_score(sched)
    field = ProbabilityFlowField(score, sde, t_eps)
    x = torch.randn(10, 2, generator=gen, dtype=D)
    u = torch.tensor(0.4, dtype=D)
    t = u * (1 - t_eps)
    torch.testing.assert_close(field(u, x), (1 - t_eps) * _exact_velocity(sched, t, x))
    # exact p_0 (whitened sample) -> the law at t = 1 - t_eps, mean and covariance
    z = torch.randn(4000, 2, generator=gen, dtype=D)
    z = (z - z.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    a0, _, C0 = _cov(sched, 0.0)
    x0 = a0 * M + z @ torch.linalg.cholesky(C0).T
    res = probability_flow_sample(score, x0, sde=sde, atol=1e-9, rtol=1e-9)
    a1, _, C1 = _cov(sched, 1 - t_eps)
    torch.testing.assert_close(res.x.mean(0), a1 * M, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cov(res.x.T), C1, atol=1e-6, rtol=0)


def test_pf_likelihood_matches_the_closed_form(gen):
    sde, t_eps = VPSDE(), 1e-3
    sched = VPSchedule(sde)
    a0, _, C0 = _cov(sched, 0.0)
    a1, _, C1 = _cov(sched, 1 - t_eps)
    src = torch.distributions.MultivariateNormal(a0 * M, C0).log_prob
    x1 = M + torch.randn(20, 2, generator=gen, dtype=D) @ _L.T
    res = probability_flow_log_likelihood(_exact_score(sched), x1, sde=sde,
                                          source_logprob=src, atol=1e-9, rtol=1e-9)
    exact = torch.distributions.MultivariateNormal(a1 * M, C1).log_prob(x1)
    torch.testing.assert_close(res.logp, exact, atol=1e-6, rtol=0)


def test_reverse_sde_with_the_exact_score_samples_the_target(gen):
    sched = VPSchedule()
    x0 = torch.randn(8000, 2, generator=gen, dtype=D)
    res = reverse_sde_sample(_exact_score(sched), x0, steps=200, method="heun", generator=gen)
    assert res.nfe == 400
    assert float((res.x.mean(0) - M).abs().max()) < 0.025
    assert float((torch.cov(res.x.T) - S).abs().max()) < 0.025


def test_dsm_training_learns_the_gaussian_score(gen):
    torch.manual_seed(0)
    net = MLPVectorField(2, hidden=64, depth=2, activation="silu").double()
    dm = DiffusionMatcher()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        x1 = M + torch.randn(256, 2, generator=gen, dtype=D) @ _L.T
        loss = dm.loss(net, torch.randn(256, 2, generator=gen, dtype=D), x1, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    score = EpsScore(net, dm.sde)
    sched = VPSchedule(dm.sde)
    for t in (0.3, 0.7):
        a, _, C = _cov(sched, t)
        x = a * M + torch.randn(500, 2, generator=gen, dtype=D) @ torch.linalg.cholesky(C).T
        with torch.no_grad():
            learned = score(torch.tensor(t, dtype=D), x)
        exact = _exact_score(sched)(t, x)
        rel = float((learned - exact).norm() / exact.norm())
        assert rel < 0.2, (t, rel)
    # the noise predictor of the exact score attains the DSM minimum: loss of a perturbation
    # is larger (DSM is minimised by E[x0 | xt])
    eps_exact = lambda t, x: -_exact_score(sched)(t, x) * dm.sde.sigma(1 - t)[:, None]  # noqa: E731
    x1 = M + torch.randn(20000, 2, generator=gen, dtype=D) @ _L.T
    z = torch.randn(20000, 2, generator=gen, dtype=D)
    l0 = float(dm.loss(eps_exact, z, x1, generator=torch.Generator().manual_seed(5)))
    l1 = float(dm.loss(lambda t, x: 1.1 * eps_exact(t, x), z, x1,
                       generator=torch.Generator().manual_seed(5)))
    assert l0 < l1


def test_make_matcher_points_to_the_diffusion_objective():
    with pytest.raises(ValueError, match="make_objective"):
        make_matcher("diffusion")


def test_train_method_diffusion_through_the_cli(tmp_path, capsys):
    small = TrainConfig(method="diffusion", n_eval=300, n_nll=50, sde_steps=100).to_json()
    (tmp_path / "small.json").write_text(json.dumps(small))
    tiny = ["--config", str(tmp_path / "small.json"), "--steps", "60", "--batch-size", "32",
            "--hidden", "16", "--depth", "2"]
    run = tmp_path / "run"
    assert main(["train", *tiny, "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("w2", "nfe", "nll", "w2_sde", "nfe_sde", "path_energy"):
        assert key in summary and summary[key] is not None and math.isfinite(summary[key])
    assert summary["nfe_sde"] == 100 and summary["method"] == "diffusion"
    with pytest.raises(ValueError, match="reflow"):
        TrainConfig(method="diffusion", reflow=1)


@pytest.mark.slow
def test_diffusion_eval_is_deterministic_sample_works_and_resume_is_bit_for_bit(tmp_path,
                                                                               capsys):
    small = TrainConfig(method="diffusion", n_eval=300, n_nll=50, sde_steps=100).to_json()
    (tmp_path / "small.json").write_text(json.dumps(small))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "small.json"), "--steps", "40",
                 "--batch-size", "32", "--hidden", "16", "--depth", "2", "--out",
                 str(run)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "--run", str(run)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["w2"] == summary["w2"] and again["w2_sde"] == summary["w2_sde"]
    assert main(["sample", "--run", str(run), "--n", "20", "--solver", "rk4", "--steps",
                 "5"]) == 0
    # bit-for-bit resume of a diffusion run
    cfg = TrainConfig(method="diffusion", steps=30, ckpt_every=10, batch_size=32, hidden=16,
                      depth=2)
    _, full = train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "part", progress=False, stop_after=20)
    _, resumed = train(cfg, tmp_path / "part", progress=False, resume=True)
    assert resumed["loss"] == full["loss"]
    wa = load_file(str(tmp_path / "full" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
