"""MLPs, vector fields and time embeddings: shapes, the TorchCFM architecture, gradients,
embedding values, and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from otgen.models import (
    MLP,
    MLPVectorField,
    SinusoidalTimeEmbedding,
    count_parameters,
    expand_time,
    sinusoidal_embedding,
)


def torchcfm_mlp(dim: int, w: int = 64) -> nn.Sequential:
    """TorchCFM ``MLP(dim, w=w, time_varying=True).net``, rebuilt layer by layer."""
    return nn.Sequential(
        nn.Linear(dim + 1, w), nn.SELU(),
        nn.Linear(w, w), nn.SELU(),
        nn.Linear(w, w), nn.SELU(),
        nn.Linear(w, dim),
    )  # fmt: skip


# --------------------------------------------------------------------------- vector field


@pytest.mark.parametrize("mode", ["concat", "sinusoidal"])
@pytest.mark.parametrize(
    "make_t", [lambda b: 0.3, lambda b: torch.tensor(0.3), lambda b: torch.rand(b)]
)
def test_field_output_shapes(mode, make_t, dtype):
    field = MLPVectorField(3, hidden=16, time_embedding=mode).to(dtype)
    x = torch.randn(5, 3, dtype=dtype)
    out = field(make_t(5), x)
    assert out.shape == (5, 3) and out.dtype == dtype


def test_scalar_time_equals_per_row_time():
    field = MLPVectorField(2, time_embedding="sinusoidal")
    x = torch.randn(6, 2)
    a = field(0.25, x)
    torch.testing.assert_close(a, field(torch.tensor(0.25), x))
    torch.testing.assert_close(a, field(torch.full((6,), 0.25), x))


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_concat_mode_is_torchcfm_mlp(dim):
    ours = MLPVectorField(dim)  # defaults: hidden 64, depth 3, SELU, concat
    ref = torchcfm_mlp(dim)
    assert count_parameters(ours) == count_parameters(ref)
    sd_ours, sd_ref = ours.net.state_dict(), ref.state_dict()
    assert list(sd_ours) == list(sd_ref)
    assert all(sd_ours[k].shape == sd_ref[k].shape for k in sd_ref)
    assert [type(m) for m in ours.net] == [type(m) for m in ref]
    # Same network: TorchCFM weights load unchanged and give the same v(t, x) on [x, t].
    ours.net.load_state_dict(sd_ref)
    x, t = torch.randn(9, dim), torch.rand(9)
    torch.testing.assert_close(ours(t, x), ref(torch.cat([x, t[:, None]], 1)))


def test_torchcfm_parameter_count_closed_form():
    # Linear(3, 64) + 2 x Linear(64, 64) + Linear(64, 2) = 256 + 2 * 4160 + 130.
    assert count_parameters(MLPVectorField(2)) == 8706 == 3 * 64 + 64 + 2 * 4160 + 130


def test_sinusoidal_mode_and_conditioning_widths():
    f = MLPVectorField(
        2,
        hidden=32,
        depth=2,
        time_embedding="sinusoidal",
        time_dim=10,
        cond_dim=4,
        activation="silu",
    )
    assert f.net[0].in_features == 2 + 10 + 4
    assert sum(isinstance(m, nn.Linear) for m in f.net) == 3
    assert all(isinstance(m, nn.SiLU) for m in f.net[1::2])
    x, c = torch.randn(7, 2), torch.randn(7, 4)
    assert f(torch.rand(7), x, c).shape == (7, 2)
    assert not torch.allclose(f(0.5, x, c), f(0.5, x, torch.zeros(7, 4)))


def test_gradients_flow():
    f = MLPVectorField(2, time_embedding="sinusoidal", cond_dim=3)
    x = torch.randn(8, 2, requires_grad=True)
    t = torch.rand(8, requires_grad=True)
    f(t, x, torch.randn(8, 3)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in f.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert t.grad is not None and t.grad.abs().sum() > 0


def test_field_time_dependence_concat():
    f = MLPVectorField(2)
    x = torch.randn(4, 2)
    assert not torch.allclose(f(0.0, x), f(1.0, x))


def test_field_bad_inputs():
    f = MLPVectorField(2)
    with pytest.raises(ValueError, match=r"`x` must have shape \(B, 2\), got \(4, 3\)"):
        f(0.0, torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"`t` must have shape \(\) or \(4,\) .*got \(4, 1\)"):
        f(torch.rand(4, 1), torch.randn(4, 2))
    with pytest.raises(TypeError, match="`t` must be a float or a tensor"):
        f("0.5", torch.randn(4, 2))
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        f(0.0, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="cond_dim=0"):
        f(0.0, torch.randn(4, 2), torch.randn(4, 1))
    g = MLPVectorField(2, cond_dim=3)
    with pytest.raises(ValueError, match="`cond` is required"):
        g(0.0, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"`cond` must have shape \(4, 3\)"):
        g(0.0, torch.randn(4, 2), torch.randn(4, 2))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"activation": "swish"}, ValueError, "`activation` must be one of 'selu', 'silu'"),
        ({"time_embedding": "fourier"}, ValueError, "`time_embedding` must be one of"),
        ({"depth": 0}, ValueError, "`depth` must be >= 1"),
        ({"hidden": 0}, ValueError, "`hidden` must be >= 1"),
        ({"time_embedding": "sinusoidal", "time_dim": 1}, ValueError, "`time_dim` must be"),
        ({"cond_dim": -1}, ValueError, "`cond_dim` must be >= 0"),
        ({"hidden": 2.5}, TypeError, "`hidden` must be an int"),
    ],
)
def test_field_bad_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MLPVectorField(2, **kwargs)


# --------------------------------------------------------------------------- generic MLP


@pytest.mark.parametrize("activation", ["selu", "silu", "relu", "gelu", "tanh", "elu"])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_mlp_depth_and_activation(activation, depth):
    m = MLP(4, 3, hidden=8, depth=depth, activation=activation)
    linears = [mod for mod in m if isinstance(mod, nn.Linear)]
    assert len(linears) == depth + 1 and len(m) == 2 * depth + 1
    assert linears[0].in_features == 4 and linears[-1].out_features == 3
    expected = 4 * 3 + 3 if depth == 0 else (4 * 8 + 8) + (depth - 1) * (8 * 8 + 8) + (8 * 3 + 3)
    assert count_parameters(m) == expected
    assert m(torch.randn(2, 5, 4)).shape == (2, 5, 3)


def test_mlp_bad_activation_and_count_parameters():
    with pytest.raises(ValueError, match="`activation` must be one of"):
        MLP(2, 2, activation="sigmoid")
    m = MLP(2, 2, hidden=4, depth=1)
    m[0].weight.requires_grad_(False)
    assert count_parameters(m) == 4 + 10
    assert count_parameters(m, trainable_only=False) == 8 + 4 + 10
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        count_parameters("net")


# --------------------------------------------------------------------------- time embedding


def test_embedding_at_zero_and_shapes():
    emb = SinusoidalTimeEmbedding(8)
    e0 = emb(torch.tensor(0.0))
    assert e0.shape == (1, 8)
    torch.testing.assert_close(e0, torch.tensor([[1.0] * 4 + [0.0] * 4]))
    assert emb(0.0).shape == (1, 8) and emb(torch.rand(5)).shape == (5, 8)
    odd = SinusoidalTimeEmbedding(7)(torch.rand(3))
    assert odd.shape == (3, 7) and (odd[:, -1] == 0).all()
    with pytest.raises(ValueError, match=r"`t` must have shape \(\) or \(B,\)"):
        emb(torch.rand(2, 2))
    with pytest.raises(ValueError, match="`dim` must be >= 2"):
        SinusoidalTimeEmbedding(1)


def test_embedding_formula_and_periodicity():
    dim, scale, max_period = 6, 1000.0, 10000.0
    t = torch.tensor([0.1, 0.37], dtype=torch.float64)
    e = sinusoidal_embedding(t, dim)
    k = torch.arange(3, dtype=torch.float64)
    w = max_period ** (-k / 3)
    expected = torch.cat([torch.cos(scale * t[:, None] * w), torch.sin(scale * t[:, None] * w)], 1)
    torch.testing.assert_close(e, expected)
    # Feature k is periodic in t with period 2π / (scale · ω_k); cos² + sin² = 1 per pair.
    for j in range(3):
        period = 2 * math.pi / (scale * w[j].item())
        shifted = sinusoidal_embedding(t + period, dim)
        torch.testing.assert_close(shifted[:, [j, j + 3]], e[:, [j, j + 3]], atol=1e-9, rtol=0)
    torch.testing.assert_close(e[:, :3] ** 2 + e[:, 3:] ** 2, torch.ones(2, 3, dtype=e.dtype))


def test_expand_time():
    like = torch.zeros(3, 2, dtype=torch.float64)
    out = expand_time(torch.tensor(0.5, dtype=torch.float32), 3, like)
    assert out.shape == (3,) and out.dtype == torch.float64
    assert torch.equal(expand_time(2, 3, like), torch.full((3,), 2.0, dtype=torch.float64))
