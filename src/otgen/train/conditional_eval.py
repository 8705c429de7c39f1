r"""Evaluation of a trained image flow (:mod:`otgen.train.conditional`): samples per class
at several guidance scales, digits FD, conditional accuracy, pixel-space W2 / Sinkhorn
divergence, dequantised bits/dim, and the sample grids."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from otgen.models.conv import ConvVectorField
from otgen.train.conditional import ConditionalConfig, load_image_data, torch_threads

__all__ = ["evaluate_conditional", "sample_images", "scale_tag"]


def scale_tag(w: float) -> str:
    """Suffix of the metrics of guidance scale ``w``: ``"g2"``, ``"g0.5"``."""
    return f"g{w:g}"


def sample_images(model: ConvVectorField, cfg: ConditionalConfig, x0: Tensor,
                  labels: Tensor | None, scale: float) -> tuple[Tensor, int]:
    """Integrate from noise ``x0`` ``(B, d)`` with guidance ``scale`` toward ``labels``
    ``(B,)`` (``None``: the unconditional field). Returns ``(images (B, d), nfe)``."""
    from otgen.flows.guidance import guided_sample

    lab: Tensor | int = model.null_class if labels is None else labels
    w = 1.0 if labels is None else scale
    with torch.no_grad():
        x, res, _ = guided_sample(model, x0, lab, w, method=cfg.solver,
                                  steps=cfg.solver_steps, atol=cfg.atol, rtol=cfg.rtol)
    return x, int(res.nfe)


def _with_labels(model: ConvVectorField, c: Tensor) -> Any:
    def field(t: Tensor, z: Tensor) -> Tensor:
        return model(t, z, c)

    return field


def _write_metrics(path: Path, obj: dict[str, Any]) -> None:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in obj.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def evaluate_conditional(model: ConvVectorField, cfg: ConditionalConfig,
                         run_dir: str | os.PathLike[str], state: dict[str, Any], *,
                         figures: bool = True, classifier: Any = None) -> dict[str, Any]:
    """See :func:`_evaluate`; runs with ``cfg.threads`` torch threads."""
    with torch_threads(cfg.threads):
        return _evaluate(model, cfg, run_dir, state, figures=figures, classifier=classifier)


def _evaluate(model: ConvVectorField, cfg: ConditionalConfig,
              run_dir: str | os.PathLike[str], state: dict[str, Any], *,
              figures: bool = True, classifier: Any = None) -> dict[str, Any]:
    r"""Metrics of a trained image flow, written to ``run_dir/metrics.json`` (+ PNGs).

    For each guidance scale ``w`` of ``eval_guidance`` (and ``guidance``), ``n_per_class``
    images per class are generated from the same noise (seeded stream ``seed*1000+99``):
    ``digits_fd_g<w>`` (FD to the test images in the digits classifier's features),
    ``cond_acc_g<w>`` (classifier agrees with the requested class), ``nfe_g<w>``. Headline
    keys at ``guidance``: ``digits_fd``, ``cond_acc``, ``nfe``, ``w2`` (exact W2 to as
    many test images, pixel space), ``sinkhorn_div`` (ε = 5 % of the mean cost), the data
    floors ``digits_fd_floor`` / ``w2_floor`` (training images vs test images, same
    sizes), ``bpd`` (bits/dim of ``n_nll`` test images under :math:`p(x\mid c)`, uniform
    dequantisation) and ``bpd_uncond`` (under :math:`p(x\mid\varnothing)`). The digits
    classifier metrics exist for ``data="digits"`` only. Unconditional runs evaluate
    only the null class (``w`` is meaningless there).
    """
    from otgen.metrics.digits import (
        conditional_accuracy,
        dequantized_bits_per_dim,
        frechet_distance,
        load_digits_classifier,
    )
    from otgen.ot import sinkhorn_divergence, wasserstein

    out = Path(run_dir)
    dtype = next(model.parameters()).dtype
    test, train = load_image_data(cfg.data, "test"), load_image_data(cfg.data, "train")
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 99)
    n = 10 * cfg.n_per_class
    labels = torch.arange(10).repeat_interleave(cfg.n_per_class)  # (n,)
    x0 = torch.randn(n, test.pixels.shape[1], generator=g, dtype=dtype)
    pick = torch.randperm(test.pixels.shape[0], generator=g)[:n]
    x_test = test.images(dtype)[pick]
    x_train = train.images(dtype)[torch.randperm(train.pixels.shape[0], generator=g)[:n]]
    digits = cfg.data == "digits"
    clf = (classifier if classifier is not None else load_digits_classifier()) if digits \
        else None
    scales = sorted({cfg.guidance, *cfg.eval_guidance}) if cfg.conditional else [0.0]
    metrics: dict[str, Any] = {}
    samples: dict[float, Tensor] = {}
    for w in scales:
        x, nfe = sample_images(model, cfg, x0, labels if cfg.conditional else None, w)
        samples[w] = x
        metrics[f"nfe_{scale_tag(w)}"] = nfe
        if clf is not None:
            with torch.no_grad():
                fd = frechet_distance(clf.features(x), clf.features(x_test))
            metrics[f"digits_fd_{scale_tag(w)}"] = float(fd)
            if cfg.conditional:
                metrics[f"cond_acc_{scale_tag(w)}"] = conditional_accuracy(x, labels,
                                                                           classifier=clf)
    head = cfg.guidance if cfg.conditional else 0.0
    x = samples[head]
    for key in ("digits_fd", "cond_acc", "nfe"):
        if f"{key}_{scale_tag(head)}" in metrics:
            metrics[key] = metrics[f"{key}_{scale_tag(head)}"]
    metrics["w2"] = float(wasserstein(x.double(), x_test.double()))
    metrics["w2_floor"] = float(wasserstein(x_train.double(), x_test.double()))
    metrics["sinkhorn_div"] = float(sinkhorn_divergence(x.double(), x_test.double(),
                                                        eps_rel=0.05))
    if clf is not None:
        with torch.no_grad():
            metrics["digits_fd_floor"] = float(frechet_distance(clf.features(x_train),
                                                                clf.features(x_test)))
    if cfg.n_nll:
        sub = pick[: cfg.n_nll]
        pix, lab = test.pixels[sub], test.labels[sub]
        kw: dict[str, Any] = {"step": test.step, "offset": test.offset, "dtype": dtype,
                              "divergence": cfg.nll_divergence, "method": cfg.solver,
                              "atol": cfg.atol, "rtol": cfg.rtol,
                              "steps": None if cfg.solver == "dopri5" else cfg.solver_steps}
        null = torch.full_like(lab, model.null_class)
        for key, c in (("bpd", lab), ("bpd_uncond", null)):
            if key == "bpd" and not cfg.conditional:
                continue
            with torch.no_grad():  # no graph over the whole solve
                res = dequantized_bits_per_dim(
                    _with_labels(model, c), pix,
                    generator=torch.Generator().manual_seed(cfg.seed * 1000 + 98), **kw)
            metrics[key] = res.mean
        if not cfg.conditional:
            metrics["bpd"] = metrics["bpd_uncond"]
    metrics.update({"steps": int(state.get("step", 0)),
                    "train_seconds": float(state.get("train_seconds", float("nan"))),
                    "coupling": cfg.coupling, "guidance": head, "solver": cfg.solver,
                    "n_eval": n, "data": cfg.data,
                    "classifier_test_accuracy": _classifier_accuracy(clf)})
    _write_metrics(out / "metrics.json", metrics)
    if figures:
        _figures(out, cfg, state, samples, head, test.shape)
    return metrics


def _classifier_accuracy(clf: Any) -> float:
    """Test accuracy of the digits classifier on the real test images (a sanity floor)."""
    if clf is None:
        return float("nan")
    from otgen.metrics.digits import conditional_accuracy

    data = load_image_data("digits", "test")
    return conditional_accuracy(data.images(), data.labels, classifier=clf)


def _figures(out: Path, cfg: ConditionalConfig, state: dict[str, Any],
             samples: dict[float, Tensor], head: float, shape: tuple[int, int, int]) -> None:
    from otgen.viz.flows import plot_loss
    from otgen.viz.images import plot_image_grid

    plot_loss(list(state.get("loss", []))).savefig(out / "loss.png")
    k = min(10, cfg.n_per_class)
    rows = [str(c) for c in range(10)] if cfg.conditional else None
    for w, x in samples.items():
        grid = x.reshape(10, cfg.n_per_class, -1)[:, :k].reshape(10 * k, -1)
        title = f"{cfg.coupling}, guidance w = {w:g}" if cfg.conditional else cfg.coupling
        fig = plot_image_grid(grid, shape=shape[1:], ncol=k, title=title, row_labels=rows)
        fig.savefig(out / f"samples_{scale_tag(w)}.png")
        if w == head:
            fig.savefig(out / "samples.png")
