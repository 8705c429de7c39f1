r"""Metrics of generated 8×8 digits that run on the CPU, honestly and reproducibly.

* A small digits classifier (:class:`DigitsClassifier`, an MLP 64 → 256 → 64 → 10 on
  images scaled to ``[-1, 1]``) trained **once by otgen** on the fixed training split
  (:func:`otgen.data.digits.load_digits`) with a fixed seed, and cached in a run cache
  directory (``$OTGEN_CACHE`` or ``runs/.cache``) as ``digits_classifier.safetensors`` +
  ``digits_classifier.json`` (recipe version, SHA-256, accuracies). It is rebuilt when
  missing, when its checksum does not match (truncated or edited) or when the recipe
  changed; it is never downloaded.
* **digits FD**: the Fréchet distance between Gaussians fitted to the classifier's
  penultimate-layer features (64-d, after ReLU) of generated and reference images,

  .. math::
      \mathrm{FD} = |\mu_g - \mu_r|^2 + \operatorname{tr}\big(S_g + S_r
          - 2 (S_g^{1/2} S_r S_g^{1/2})^{1/2}\big) = W_2^2\big(N(\mu_g,S_g), N(\mu_r,S_r)\big),

  the FID formula (Heusel et al. 2017) in a feature space fit for 8×8 digits; computed by
  :func:`otgen.ot.gaussian.gaussian_w2_squared` in float64 with unbiased covariances. FD
  depends on the sample sizes; compare numbers at equal sizes and against the floor
  FD(train subset, test) of the same size.
* **conditional accuracy**: the fraction of images generated for class :math:`c` that the
  classifier assigns to :math:`c`.
* **bits/dim with uniform dequantisation** (Theis et al. 2016) through the likelihood API
  :func:`otgen.flows.likelihood.log_likelihood`: pixels :math:`p \in \{0, \dots, L-1\}` map
  to model space :math:`z = a p + b` (digits: :math:`a = 1/8, b = -1, L = 17`); with
  :math:`u \sim U[0,1)^d`, :math:`\tilde z = a(p + u - \tfrac12) + b`, and

  .. math::
      -\log_2 P(p) \le -\mathbb E_u\big[\log p_Z(\tilde z) + d \log a\big] / \log 2 ,

  reported per dimension. A model that is uniform over the cube gives
  :math:`\log_2 L` (4.09 bits/dim for digits).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from otgen._validate import as_points, check_tensor
from otgen.data.digits import load_digits
from otgen.flows.likelihood import bits_per_dim, log_likelihood, standard_normal_logprob
from otgen.ot.gaussian import gaussian_w2_squared

__all__ = [
    "DigitsClassifier", "train_digits_classifier", "load_digits_classifier", "cache_dir",
    "frechet_distance", "digits_fd", "conditional_accuracy", "DequantizedNLL",
    "dequantized_bits_per_dim", "DIGITS_STEP", "DIGITS_OFFSET", "DIGITS_LEVELS",
]

#: Digits pixels p in {0..16} map to z = DIGITS_STEP * p + DIGITS_OFFSET in [-1, 1].
DIGITS_STEP, DIGITS_OFFSET, DIGITS_LEVELS = 1.0 / 8.0, -1.0, 17
_RECIPE = {"version": 1, "hidden": 256, "features": 64, "epochs": 30, "batch_size": 64,
           "lr": 1e-3, "weight_decay": 1e-4, "noise": 0.1, "seed": 0}
_NAME = "digits_classifier"


class DigitsClassifier(nn.Module):
    """MLP classifier of flat ``[-1, 1]`` digits: ``(B, 64)`` → logits ``(B, 10)``;
    :meth:`features` gives the penultimate layer ``(B, features)`` (after ReLU)."""

    def __init__(self, hidden: int = 256, features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, features),
                                  nn.ReLU())
        self.head = nn.Linear(features, 10)

    def _flat(self, x: Tensor) -> Tensor:
        x = check_tensor("x", x)
        if x.ndim < 2 or math.prod(x.shape[1:]) != 64:
            raise ValueError(f"`x` must hold 8x8 digits, (B, 64) or (B, 1, 8, 8), got "
                             f"{tuple(x.shape)}.")
        p = next(self.parameters())
        return x.reshape(x.shape[0], 64).to(dtype=p.dtype, device=p.device)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, features)`` of images ``(B, 64)`` or ``(B, 1, 8, 8)``."""
        return self.body(self._flat(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The run cache: ``path``, else ``$OTGEN_CACHE``, else ``runs/.cache``."""
    return Path(path if path is not None else os.environ.get("OTGEN_CACHE", "runs/.cache"))


def _accuracy(model: DigitsClassifier, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def train_digits_classifier() -> tuple[DigitsClassifier, dict[str, float]]:
    """Train the classifier by the fixed recipe (seeded, float32, CPU, a few seconds).

    Returns:
        ``(model, info)`` with ``train_accuracy`` and ``test_accuracy``.
    """
    r = _RECIPE
    x, y = load_digits("train", "[-1,1]")
    xt, yt = load_digits("test", "[-1,1]")
    g = torch.Generator().manual_seed(int(r["seed"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(r["seed"]))
        model = DigitsClassifier(int(r["hidden"]), int(r["features"]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(r["lr"]),
                            weight_decay=float(r["weight_decay"]))
    n, bs = x.shape[0], int(r["batch_size"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is fastest and deterministic
    try:
        _fit(model, opt, x, y, g, n, bs)
    finally:
        torch.set_num_threads(threads)
    model.eval().requires_grad_(False)
    return model, {"train_accuracy": _accuracy(model, x, y),
                   "test_accuracy": _accuracy(model, xt, yt)}


def _fit(model: DigitsClassifier, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
         g: torch.Generator, n: int, bs: int) -> None:
    r = _RECIPE
    for _ in range(int(r["epochs"])):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            xb = x[idx] + float(r["noise"]) * torch.randn(idx.shape[0], 64, generator=g)
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _try_load(weights: Path, meta_path: Path) -> DigitsClassifier | None:
    if not (weights.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") != _RECIPE:
            return None
        if meta.get("sha256") != _sha256(weights):
            warnings.warn(f"{weights} does not match its checksum; rebuilding the digits "
                          "classifier.", RuntimeWarning, stacklevel=3)
            return None
        model = DigitsClassifier(int(_RECIPE["hidden"]), int(_RECIPE["features"]))
        model.load_state_dict(load_file(str(weights)))
    except (json.JSONDecodeError, OSError, SafetensorError, RuntimeError, AttributeError):
        return None
    return model.eval().requires_grad_(False)


def load_digits_classifier(cache: str | os.PathLike[str] | None = None, *,
                           rebuild: bool = False) -> DigitsClassifier:
    """The cached digits classifier, trained (and cached) first if needed.

    Args:
        cache: Cache directory (default :func:`cache_dir`).
        rebuild: Retrain even if a valid cached copy exists.
    Returns:
        The classifier in eval mode (float32, CPU), gradients disabled.
    """
    d = cache_dir(cache)
    weights, meta_path = d / f"{_NAME}.safetensors", d / f"{_NAME}.json"
    model = None if rebuild else _try_load(weights, meta_path)
    if model is not None:
        return model
    model, info = train_digits_classifier()
    d.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{id(model)}"
    tmp_w = d / f".{_NAME}.safetensors.tmp-{tag}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_w))
    meta = {"recipe": _RECIPE, "sha256": _sha256(tmp_w), **info}
    tmp_m = d / f".{_NAME}.json.tmp-{tag}"
    tmp_m.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_w, weights)
    os.replace(tmp_m, meta_path)
    return model


def frechet_distance(f_gen: Tensor, f_ref: Tensor) -> Tensor:
    r"""Fréchet distance between Gaussians fitted to two feature clouds (the FID formula).

    Args:
        f_gen: ``(n, k)`` features; f_ref: ``(m, k)`` features; ``n, m >= 2``.
    Returns:
        0-d float64 tensor :math:`|\mu_g-\mu_r|^2 + \operatorname{tr}(S_g + S_r -
        2(S_g^{1/2} S_r S_g^{1/2})^{1/2})` with unbiased covariances (this is
        :math:`W_2^2` of the two Gaussians, not its root).
    Raises:
        ValueError: fewer than 2 points, dimensions differ, non-finite entries.
    Example:
        >>> f = torch.randn(100, 3, dtype=torch.float64)
        >>> float(frechet_distance(f, f)) < 1e-10
        True
    """
    a = as_points("f_gen", f_gen, min_points=2).detach().double()
    b = as_points("f_ref", f_ref, min_points=2).detach().double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"`f_gen` and `f_ref` must have the same feature dimension, got "
                         f"{a.shape[1]} and {b.shape[1]}.")
    return gaussian_w2_squared(a.mean(0), torch.cov(a.T).reshape(a.shape[1], a.shape[1]),
                               b.mean(0), torch.cov(b.T).reshape(b.shape[1], b.shape[1]))


def digits_fd(x_gen: Tensor, x_ref: Tensor | None = None, *,
              classifier: DigitsClassifier | None = None) -> float:
    """digits FD between generated images ``(n, 64)`` in ``[-1, 1]`` and ``x_ref``
    (default: the 360 test images) in the classifier's penultimate features."""
    clf = classifier if classifier is not None else load_digits_classifier()
    ref = x_ref if x_ref is not None else load_digits("test", "[-1,1]")[0]
    with torch.no_grad():
        return float(frechet_distance(clf.features(x_gen), clf.features(ref)))


def conditional_accuracy(x_gen: Tensor, labels: Tensor, *,
                         classifier: DigitsClassifier | None = None) -> float:
    """Fraction of images ``(n, 64)`` the classifier assigns to their requested class
    ``labels`` ``(n,)``."""
    clf = classifier if classifier is not None else load_digits_classifier()
    if labels.shape != (x_gen.shape[0],):
        raise ValueError(f"`labels` must have shape ({x_gen.shape[0]},), got "
                         f"{tuple(labels.shape)}.")
    with torch.no_grad():
        pred = clf(x_gen).argmax(1).cpu()
    return float((pred == labels.cpu()).double().mean())


@dataclass(frozen=True)
class DequantizedNLL:
    """``bpd`` ``(B,)`` bits/dim per image (upper bound on the discrete NLL); ``z``
    ``(B, d)`` the dequantised points; ``logp`` ``(B,)`` model log-density at ``z``;
    ``nfe`` of the backward solve."""

    bpd: Tensor
    z: Tensor
    logp: Tensor
    nfe: int

    @property
    def mean(self) -> float:
        return float(self.bpd.detach().mean())


def dequantized_bits_per_dim(
    field: Callable[[Tensor, Tensor], Tensor], pixels: Tensor, *, step: float = DIGITS_STEP,
    offset: float = DIGITS_OFFSET, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32, divergence: str = "exact", n_probes: int = 1,
    method: str = "dopri5", steps: int | None = None, atol: float = 1e-5, rtol: float = 1e-5,
) -> DequantizedNLL:
    r"""Bits/dim of integer images under a flow, with uniform dequantisation.

    Args:
        field: ``v(t, z)`` on model space (close over a class label for :math:`p(x\mid c)`).
        pixels: Integer pixel levels ``(B, d)`` (any numeric dtype, values ``0..L-1``).
        step, offset: Model space ``z = step * p + offset``.
        generator: Draws of the dequantisation noise ``u`` (and Hutchinson probes).
        dtype: Floating dtype of ``z``.
        divergence, n_probes, method, steps, atol, rtol: See
            :func:`otgen.flows.likelihood.log_likelihood`.
    Returns:
        :class:`DequantizedNLL`.
    """
    if pixels.ndim != 2:
        raise ValueError(f"`pixels` must be (B, d) integer levels, got {tuple(pixels.shape)}.")
    p = pixels.to(dtype)
    u = torch.rand(p.shape, generator=generator, dtype=dtype,
                   device=generator.device if generator is not None else p.device)
    z = step * (p + u.to(p.device) - 0.5) + offset  # (B, d)
    like = log_likelihood(field, z, source_logprob=standard_normal_logprob,
                          divergence=divergence, n_probes=n_probes, generator=generator,
                          method=method, steps=steps, atol=atol, rtol=rtol)
    bpd = bits_per_dim(like.logp, p.shape[1], log_scale=math.log(step))
    return DequantizedNLL(bpd=bpd, z=z, logp=like.logp, nfe=like.nfe)
