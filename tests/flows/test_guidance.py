"""Classifier-free guidance: the affine combination, its special cases, one batched pass,
and a closed-form guided flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from otgen.flows.guidance import ClassifierFreeGuidance, guided_sample


class _Affine(nn.Module):
    """v(t, x, c) = A_c x + t b_c: a different linear field per class (class 3 = null)."""

    null_class = 3

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = torch.randn(4, 2, 2, generator=g, dtype=torch.float64) * 0.3
        self.b = torch.randn(4, 2, generator=g, dtype=torch.float64)
        self.rows = 0

    def forward(self, t, x, c):
        self.rows += x.shape[0]
        t = t if t.ndim else t.expand(x.shape[0])
        return torch.einsum("bij,bj->bi", self.A[c], x) + t[:, None] * self.b[c]


def test_special_cases_affinity_in_w_and_one_batched_pass():
    net = _Affine()
    x = torch.randn(5, 2, dtype=torch.float64)
    c = torch.tensor([0, 1, 2, 0, 1])
    t = torch.tensor(0.4, dtype=torch.float64)
    null = torch.full_like(c, 3)
    v_c, v_u = net(t, x, c), net(t, x, null)
    assert torch.equal(ClassifierFreeGuidance(net, c, 1.0)(t, x), v_c)
    assert torch.equal(ClassifierFreeGuidance(net, c, 0.0)(t, x), v_u)
    for w in (-0.5, 2.0, 4.0):
        guided = ClassifierFreeGuidance(net, c, w)
        net.rows = 0
        v_w = guided(t, x)
        assert net.rows == 10 and guided.network_rows == 10  # one forward of 2B rows
        assert torch.allclose(v_w, v_u + w * (v_c - v_u), atol=1e-13)
    # affine in w: v_2 - v_1 = v_1 - v_0
    v = [ClassifierFreeGuidance(net, c, w)(t, x) for w in (0.0, 1.0, 2.0)]
    assert torch.allclose(v[2] - v[1], v[1] - v[0], atol=1e-13)
    # per-row times are duplicated with the batch
    tb = torch.rand(5, dtype=torch.float64)
    assert torch.allclose(ClassifierFreeGuidance(net, c, 3.0)(tb, x),
                          net(tb, x, null) + 3.0 * (net(tb, x, c) - net(tb, x, null)))


def test_guidance_is_a_no_op_when_the_condition_carries_no_information():
    net = _Affine()
    net.A[1], net.b[1] = net.A[3], net.b[3]  # class 1 field == unconditional field
    x = torch.randn(3, 2, dtype=torch.float64)
    ref = net(torch.tensor(0.7), x, torch.full((3,), 1))
    for w in (0.0, 2.0, 7.5):
        assert torch.allclose(ClassifierFreeGuidance(net, 1, w)(torch.tensor(0.7), x), ref)


def test_guided_flow_of_constant_fields_has_the_closed_form_endpoint():
    """v(x, c) = a_c constant: x1 = x0 + a_null + w (a_c - a_null), exactly."""
    net = _Affine()
    net.A.zero_()
    x0 = torch.randn(6, 2, dtype=torch.float64)
    c = torch.tensor([0, 1, 2, 0, 1, 2])
    # with A = 0, v = t b_c, so x1 = x0 + b_c / 2
    for w in (0.0, 1.0, 2.5):
        x1, res, rows = guided_sample(net, x0, c, w, method="rk4", steps=4)
        expect = x0 + 0.5 * (net.b[3] + w * (net.b[c] - net.b[3]))
        assert torch.allclose(x1, expect, atol=1e-12)
        assert rows == res.nfe * 6 * (1 if w in (0.0, 1.0) else 2)


def test_guided_field_keeps_gradients_and_validates():
    net = _Affine()
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    field = ClassifierFreeGuidance(net, torch.tensor([0, 1]), 2.0)
    assert torch.autograd.gradcheck(lambda z: field(torch.tensor(0.3), z), (x,))
    with pytest.raises(ValueError, match="`scale`"):
        ClassifierFreeGuidance(net, 0, float("nan"))
    with pytest.raises(ValueError, match=r"`labels` must have shape \(2,\)"):
        ClassifierFreeGuidance(net, torch.tensor([0, 1, 2]), 2.0)(torch.tensor(0.3), x)
