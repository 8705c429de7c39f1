r"""OT views of GAN and VAE (seed note 003, after Genevay, Peyré & Cuturi 2017).

One problem, :math:`\min_\theta W_c(g_\theta\#\zeta, \nu)`, read from both sides:

* dual: a neural Kantorovich critic (:mod:`~otgen.generative.critic`, WGAN-GP / spectral
  norm) or a discrete dual vector on the data with its c-transform
  (:class:`~otgen.generative.semidual.SemiDual`, the semi-discrete generator);
* primal: minibatch exact / Sinkhorn OT losses and the Wasserstein auto-encoder
  (:mod:`~otgen.generative.primal`).

:class:`~otgen.generative.model.GenerativeModel` and :func:`~otgen.generative.model.train_step`
put them behind one interface for :mod:`otgen.train.generative` and ``otgen train --model``.
"""

from otgen.generative.critic import (
    CriticResult,
    KantorovichCritic,
    critic_generator_loss,
    critic_loss,
    gradient_penalty,
    kantorovich_dual,
    make_critic,
)
from otgen.generative.model import MODELS, GenerativeModel, Objective, param_groups, train_step
from otgen.generative.primal import kantorovich_loss, mmd_penalty, wae_loss
from otgen.generative.semidual import SemiDual

__all__ = [
    "MODELS", "CriticResult", "GenerativeModel", "KantorovichCritic", "Objective", "SemiDual",
    "critic_generator_loss", "critic_loss", "gradient_penalty", "kantorovich_dual",
    "kantorovich_loss", "make_critic", "mmd_penalty", "param_groups", "train_step", "wae_loss",
]
