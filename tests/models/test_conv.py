"""ConvVectorField: shapes, per-sample independence (valid exact divergence), conditioning,
gradients; label dropout statistics."""

from __future__ import annotations

import math

import pytest
import torch

from otgen.models import ConvVectorField, label_dropout
from otgen.models.conv import image_levels
from otgen.ode import divergence_exact


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convolutions: one torch thread is far faster on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomised(net: ConvVectorField) -> ConvVectorField:
    """The output layer starts at zero; give it weights so the field is not trivially 0."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.out.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


@pytest.mark.parametrize(("side", "levels"), [(8, 2), (28, 3)])
def test_shapes_dtype_and_zero_initial_field(side, levels):
    net = ConvVectorField(side, n_classes=10, width=4, emb_dim=8).double()
    assert net.levels == levels == image_levels(side)
    x = torch.randn(3, side * side, dtype=torch.float64)
    v = net(torch.rand(3, dtype=torch.float64), x, torch.tensor([0, 5, 10]))
    assert v.shape == x.shape and v.dtype == torch.float64
    assert torch.equal(v, torch.zeros_like(v))  # zero-initialised last layer: v = 0
    img = x.reshape(3, 1, side, side)
    assert net(0.5, img).shape == img.shape


def test_samples_are_independent_so_the_exact_divergence_is_valid():
    torch.manual_seed(0)
    net = _randomised(ConvVectorField(8, n_classes=10, width=4, emb_dim=8).double())
    x = torch.randn(4, 64, dtype=torch.float64)
    c = torch.tensor([1, 2, 3, 10])
    t = torch.tensor(0.3, dtype=torch.float64)
    full = net(t, x, c)
    for i in range(4):  # one sample at a time gives the same rows
        assert torch.allclose(net(t, x[i:i + 1], c[i:i + 1]), full[i:i + 1], atol=1e-12)
    # the batched exact divergence equals the trace of each sample's own Jacobian
    _, div = divergence_exact(lambda s, z: net(s, z, c), t, x)
    for i in range(1):
        jac = torch.autograd.functional.jacobian(lambda z, i=i: net(t, z[None], c[i:i + 1])[0],
                                                 x[i])
        assert math.isclose(float(div[i].detach()), float(torch.trace(jac)), rel_tol=1e-9,
                            abs_tol=1e-9)


def test_class_and_time_change_the_field_and_gradients_flow():
    torch.manual_seed(0)
    net = _randomised(ConvVectorField(8, n_classes=3, width=4, emb_dim=8).double())
    x = torch.randn(1, 64, dtype=torch.float64, requires_grad=True)
    v0 = net(0.5, x, torch.tensor([0]))
    assert not torch.allclose(v0, net(0.5, x, torch.tensor([1])))
    assert not torch.allclose(v0, net(0.5, x))  # null class (None) differs from class 0
    assert not torch.allclose(v0, net(0.9, x, torch.tensor([0])))
    assert torch.autograd.gradcheck(lambda z: net(0.5, z, torch.tensor([2])), (x,),
                                    eps=1e-6, atol=1e-5)


def test_bad_inputs_name_the_argument():
    net = ConvVectorField(8, n_classes=10, width=4, emb_dim=8)
    with pytest.raises(ValueError, match="`cond` labels must lie in 0..10"):
        net(0.5, torch.zeros(2, 64), torch.tensor([0, 11]))
    with pytest.raises(ValueError, match=r"`x` must have shape \(B, 64\)"):
        net(0.5, torch.zeros(2, 63))
    with pytest.raises(TypeError, match="`cond` must be an int64"):
        net(0.5, torch.zeros(2, 64), torch.zeros(2))
    with pytest.raises(ValueError, match="image_shape"):
        ConvVectorField((1, 8, 7))


def test_label_dropout_rate_and_extremes():
    y = torch.arange(10).repeat(2000)  # 20000 labels
    assert torch.equal(label_dropout(y, 0.0, 10), y)
    assert bool((label_dropout(y, 1.0, 10) == 10).all())
    d = label_dropout(y, 0.2, 10, torch.Generator().manual_seed(0))
    dropped = d == 10
    assert torch.equal(d[~dropped], y[~dropped])  # kept labels are untouched
    rate, n = float(dropped.double().mean()), y.numel()
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)  # binomial, 4 sigma
    with pytest.raises(ValueError, match="`p`"):
        label_dropout(y, 1.5, 10)
