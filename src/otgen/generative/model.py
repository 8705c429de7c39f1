r"""The five OT-view generative models as one module, and one training step for each.

Every model generates :math:`x = g_\theta(z)`, :math:`z \sim \zeta = N(0, I_k)`, and is trained
towards the data :math:`\nu = \frac1n\sum_j \delta_{y_j}` (seed note 003):

=================  ============================================================  ==========
``kind``           objective                                                     side
=================  ============================================================  ==========
``wgan``           :math:`\min_\theta\max_\xi \bar h_\xi(y) - \bar h_\xi(g(z))`   dual (2)
                   with a 1-Lipschitz critic (gradient penalty / spectral norm)
``semidiscrete``   :math:`\min_\theta\max_{\tilde h} F(\tilde h, \theta)`,         dual (1)
                   :math:`h = \tilde h^c` (:class:`~otgen.generative.SemiDual`)
``sinkhorn-gen``   minibatch :math:`S_\varepsilon` or exact :math:`W_2^2`         primal
``wae``            :math:`|y - g(f(y))|^2 + \lambda D(f\#\nu | \zeta)`            primal
``vae-elbo``       negative ELBO of :class:`otgen.models.vae.VAE` (constant        (ELBO)
                   decoder std), for comparison
=================  ============================================================  ==========

All parameters live in one module so that one optimiser (parameter groups ``generator``
and ``critic``) and one checkpoint hold the whole state. The step
functions take that optimiser and the run's random streams and return the logged values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from otgen._validate import as_points, check_choice, check_int, check_positive
from otgen.generative.critic import critic_generator_loss, critic_loss, make_critic
from otgen.generative.primal import KANTOROVICH_LOSSES, PENALTIES, kantorovich_loss, wae_loss
from otgen.generative.semidual import SemiDual
from otgen.models.mlp import MLP
from otgen.models.vae import VAE

__all__ = ["MODELS", "GenerativeModel", "Objective", "train_step", "param_groups"]

#: Model kinds (``otgen train --model``).
MODELS = ("wgan", "semidiscrete", "sinkhorn-gen", "wae", "vae-elbo")

Streams = dict[str, torch.Generator]


@dataclass(frozen=True)
class Objective:
    r"""Hyperparameters of the objectives (one generator step per :func:`train_step`).

    Attributes:
        batch_size: Generated and data points per step.
        critic_steps: ``wgan``: critic updates per generator update.
        gp_weight: ``wgan``: λ of the gradient penalty (0: spectral normalisation only).
        one_sided: ``wgan``: penalise only gradient norms above 1 (see
            :func:`~otgen.generative.critic.gradient_penalty`).
        dual_steps: ``semidiscrete``: ascent steps on :math:`\tilde h` per generator step.
        dual_batch: ``semidiscrete``: generated points per ascent step.
        dual_lr: ``semidiscrete``: η of :meth:`SemiDual.ascent_step` (in units of the mean
            gap between the two cheapest atoms).
        loss: ``sinkhorn-gen``: ``"sinkhorn"`` or ``"exact"``.
        eps_rel: ε of the Sinkhorn divergences relative to the mean cost.
        wae_lambda: ``wae``: λ. wae_penalty: ``"mmd"`` or ``"sinkhorn"``.
    """

    batch_size: int = 256
    critic_steps: int = 5
    gp_weight: float = 10.0
    one_sided: bool = True
    dual_steps: int = 1
    dual_batch: int = 1024
    dual_lr: float = 1.0
    loss: str = "sinkhorn"
    eps_rel: float = 0.05
    wae_lambda: float = 10.0
    wae_penalty: str = "mmd"

    def __post_init__(self) -> None:
        for name in ("batch_size", "critic_steps", "dual_steps", "dual_batch"):
            check_int(name, getattr(self, name))
        check_choice("loss", self.loss, KANTOROVICH_LOSSES)
        check_choice("wae_penalty", self.wae_penalty, PENALTIES)
        check_positive("eps_rel", self.eps_rel)
        check_positive("dual_lr", self.dual_lr)
        check_positive("wae_lambda", self.wae_lambda)
        if not self.gp_weight >= 0:
            raise ValueError(f"`gp_weight` must be >= 0, got {self.gp_weight!r}.")


class GenerativeModel(nn.Module):
    r"""Generator :math:`g_\theta: \mathbb R^k \to \mathbb R^d` plus what its ``kind`` trains
    against (critic, dual vector on the data, encoder, or the VAE).

    Args:
        kind: One of :data:`MODELS`.
        y: Training data ``(n, d)`` (the atoms of ``semidiscrete``; only its shape otherwise).
        latent_dim: ``k``.
        hidden, depth, activation: MLPs of the generator, critic and encoder.
        spectral_norm: ``wgan``: spectral normalisation of the critic's layers.
    Shapes:
        :meth:`decode`: ``(B, k) -> (B, d)``; :meth:`sample`: ``n -> (n, d)``.
    Example:
        >>> m = GenerativeModel("wae", torch.zeros(10, 2), latent_dim=2, hidden=8, depth=1)
        >>> m.sample(5, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """

    def __init__(self, kind: str, y: Tensor, *, latent_dim: int = 2, hidden: int = 128,
                 depth: int = 3, activation: str = "relu", spectral_norm: bool = False) -> None:
        super().__init__()
        self.kind = check_choice("kind", kind, MODELS)
        y = as_points("y", y)
        self.dim, self.latent_dim = int(y.shape[1]), check_int("latent_dim", latent_dim)
        d, k = self.dim, self.latent_dim
        self.vae: VAE | None = None
        self.generator: nn.Module | None = None
        self.critic: nn.Module | None = None
        self.encoder: nn.Module | None = None
        self.dual: SemiDual | None = None
        if kind == "vae-elbo":
            self.vae = VAE(d, k, hidden=hidden, depth=depth, activation=activation)
        else:
            self.generator = MLP(k, d, hidden=hidden, depth=depth, activation=activation)
        if kind == "wgan":
            self.critic = make_critic(d, hidden=hidden, depth=depth, activation=activation,
                                      spectral_norm=spectral_norm)
        elif kind == "semidiscrete":
            self.dual = SemiDual(y.detach())
        elif kind == "wae":
            self.encoder = MLP(d, k, hidden=hidden, depth=depth, activation=activation)

    def decode(self, z: Tensor) -> Tensor:
        r""":math:`g_\theta(z)` (the VAE's decoder mean for ``vae-elbo``)."""
        if self.vae is not None:
            return self.vae.mean(z)
        assert_net(self.generator)
        return self.generator(z)  # type: ignore[misc]

    def latent(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` prior draws ``(n, k)`` on the model's dtype/device."""
        p = next(self.parameters())
        return torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype).to(p.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` generated points ``(n, d)`` (no gradient)."""
        with torch.no_grad():
            return self.decode(self.latent(n, generator))


def assert_net(net: nn.Module | None) -> None:
    if net is None:
        raise RuntimeError("internal: this model kind has no such network")


def param_groups(model: GenerativeModel, lr: float, *, critic_lr: float | None = None
                 ) -> list[dict[str, object]]:
    """Adam parameter groups: ``generator`` (+ ``encoder`` / VAE) at ``lr`` and ``critic``
    at ``critic_lr``, both with betas (0.5, 0.9) for ``wgan`` (WGAN-GP practice). The dual
    vector of ``semidiscrete`` is not in any group: :func:`train_step` moves it by
    :meth:`SemiDual.ascent_step`."""
    betas = (0.5, 0.9) if model.kind == "wgan" else (0.9, 0.999)
    main = [p for name, p in model.named_parameters()
            if not name.startswith(("critic.", "dual."))]
    groups: list[dict[str, object]] = [{"params": main, "lr": lr, "betas": betas,
                                        "name": "generator"}]
    if model.critic is not None:
        groups.append({"params": list(model.critic.parameters()), "betas": betas,
                       "lr": critic_lr if critic_lr is not None else lr, "name": "critic"})
    return groups


def _only(opt: torch.optim.Optimizer, keep: nn.Module | list[nn.Parameter]) -> None:
    """Drop the gradients of every parameter outside ``keep`` before ``opt.step()``."""
    ids = {id(p) for p in (keep.parameters() if isinstance(keep, nn.Module) else keep)}
    for group in opt.param_groups:
        for p in group["params"]:
            if id(p) not in ids:
                p.grad = None


def train_step(model: GenerativeModel, opt: torch.optim.Optimizer,
               data: Callable[[int, torch.Generator], Tensor], streams: Streams,
               obj: Objective) -> dict[str, float]:
    r"""One generator update (plus the critic / dual updates that precede it).

    Args:
        model: The model; opt: an optimiser over :func:`param_groups`.
        data: ``data(n, generator) -> (n, d)`` training batches.
        streams: Random streams ``"data"`` (batches), ``"latent"`` (prior draws) and
            ``"aux"`` (penalty interpolates, VAE noise).
        obj: Hyperparameters.
    Returns:
        ``{"loss": ...}`` plus the kind's estimate: ``w1_critic`` (wgan, the critic's dual
        value on the last critic batch), ``semidual`` (semidiscrete, :math:`F` on the last
        ascent batch: an estimate of :math:`W_2^2`), ``rec`` / ``penalty`` (wae), ``kl``
        (vae-elbo).
    """
    B = obj.batch_size
    out: dict[str, float] = {}
    if model.kind == "wgan":
        critic, gen = model.critic, model.generator
        if critic is None or gen is None:
            raise RuntimeError("internal: wgan model without its critic or generator")
        for _ in range(obj.critic_steps):
            x = model.sample(B, streams["latent"])
            loss_c, dual = critic_loss(critic, x, data(B, streams["data"]),
                                       gp_weight=obj.gp_weight, one_sided=obj.one_sided,
                                       generator=streams["aux"])
            opt.zero_grad(set_to_none=True)
            loss_c.backward()
            _only(opt, critic)
            opt.step()
        out["w1_critic"] = float(dual)
        loss = critic_generator_loss(critic, model.decode(model.latent(B, streams["latent"])))
        keep: nn.Module | list[nn.Parameter] = gen
    elif model.kind == "semidiscrete":
        dual_m = model.dual
        if dual_m is None:
            raise RuntimeError("internal: semidiscrete model without its dual")
        for _ in range(obj.dual_steps):
            x = model.sample(obj.dual_batch, streams["latent"])
            dual_m.ascent_step(x, obj.dual_lr)
        out["semidual"] = float(dual_m.value(x))
        loss = dual_m.generator_loss(model.decode(model.latent(B, streams["latent"])))
        keep = model.generator  # type: ignore[assignment]
    elif model.kind == "sinkhorn-gen":
        x = model.decode(model.latent(B, streams["latent"]))
        kw = {} if obj.loss == "exact" else {"eps_rel": obj.eps_rel}
        loss = kantorovich_loss(x, data(B, streams["data"]), loss=obj.loss, **kw)
        keep = model
    elif model.kind == "wae":
        assert_net(model.encoder)
        y = data(B, streams["data"])
        z = model.encoder(y)  # type: ignore[misc]
        loss, rec, pen = wae_loss(y, model.decode(z), z, model.latent(B, streams["aux"]),
                                  lam=obj.wae_lambda, penalty=obj.wae_penalty,
                                  eps_rel=obj.eps_rel)
        out["rec"], out["penalty"] = float(rec.detach()), float(pen.detach())
        keep = model
    else:  # vae-elbo
        vae = model.vae
        if vae is None:
            raise RuntimeError("internal: vae-elbo model without its VAE")
        elbo, _, kl = vae.elbo(data(B, streams["data"]), generator=streams["aux"])
        loss = -elbo.mean()
        out["kl"] = float(kl.detach().mean())
        keep = model
    opt.zero_grad(set_to_none=True)
    loss.backward()
    _only(opt, keep)
    opt.step()
    out["loss"] = float(loss.detach())
    if not all(map(_finite, out.values())):
        raise FloatingPointError(f"{model.kind}: training produced {out}; lower the learning "
                                 "rate.")
    return out


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")
