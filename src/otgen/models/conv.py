r"""A small convolutional vector field ``v(t, x, c)`` for 8×8 (digits) and 28×28 (MNIST)
images, with time and class embeddings and a *null class* for classifier-free guidance.

Architecture (a two- or three-level U-Net, Ronneberger et al. 2015, as in DDPM / guided
diffusion but tiny):

* embedding :math:`e = \mathrm{MLP}(\tau(t)) + E[c]` with :math:`\tau` the sinusoidal time
  features (:func:`~otgen.models.embeddings.sinusoidal_embedding`) and :math:`E` a
  learned table of ``n_classes + 1`` rows; row ``n_classes`` is the null class ∅
  (no condition);
* residual blocks :math:`h \mapsto s(h) + W_2 * \sigma\big((1 + \gamma(e)) \odot
  N(W_1 * \sigma(N(h))) + \beta(e)\big)` (:math:`N` GroupNorm, :math:`\sigma` SiLU,
  :math:`*` 3×3 convolution, :math:`(\gamma, \beta)(e)` a per-channel scale and shift from
  the embedding, applied *after* the norm so that GroupNorm cannot remove it: the
  "scale-shift norm" of improved DDPM), one per level on the way down and up, with skip
  connections; stride-2 convolutions down, nearest-neighbour upsampling up;
* levels: the image is halved while its side is even and at least 8 (8 → 4;
  28 → 14 → 7), channels ``width``, ``2 width``, ``2 width``.

The last convolution is initialised at zero, so the untrained field is ``v = 0``. Every
operation acts on one sample at a time (GroupNorm, not BatchNorm), so the exact
divergence of :func:`otgen.ode.divergence_exact` is valid on batches.

Label dropout for classifier-free guidance (Ho & Salimans 2022) is
:func:`label_dropout`: each label is replaced by the null class with probability ``p``
during training, so one network learns both :math:`v(t, x, c)` and :math:`v(t, x, ∅)`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from otgen._validate import check_int, check_tensor
from otgen.models.embeddings import expand_time, sinusoidal_embedding

__all__ = ["ConvVectorField", "label_dropout", "image_levels"]


def image_levels(side: int, max_levels: int = 3) -> int:
    """Resolutions of the U-Net for a square image of ``side`` pixels: the image is halved
    while its side is even and >= 8 (at most ``max_levels - 1`` times).

    Example:
        >>> image_levels(8), image_levels(28), image_levels(5)
        (2, 3, 1)
    """
    levels, s = 1, side
    while s % 2 == 0 and s >= 8 and levels < max_levels:
        s //= 2
        levels += 1
    return levels


def label_dropout(y: Tensor, p: float, null: int, generator: torch.Generator | None = None
                  ) -> Tensor:
    r"""Replace each label by the null class with probability ``p`` (classifier-free
    guidance training).

    Args:
        y: Labels, int64 ``(B,)``.
        p: Drop probability in ``[0, 1]``.
        null: Index of the null class (``n_classes``).
        generator: Source of the Bernoulli draws (on the CPU or ``y``'s device).
    Returns:
        ``(B,)`` int64: ``y`` where kept, ``null`` where dropped. ``p = 0`` returns ``y``
        unchanged without drawing (the generator is not advanced).
    Raises:
        ValueError: ``p`` outside ``[0, 1]``.
    Example:
        >>> label_dropout(torch.tensor([3, 1, 4]), 1.0, 10).tolist()
        [10, 10, 10]
    """
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"`p` (label dropout) must be in [0, 1], got {p}.")
    if p == 0.0:
        return y
    draw = generator.device if generator is not None else y.device
    u = torch.rand(y.shape[0], generator=generator, device=draw).to(y.device)
    return torch.where(u < p, torch.full_like(y, null), y)


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # FiLM: per-channel scale and shift
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        z = self.conv1(self.act(self.norm1(h)))  # (B, c_out, H, W)
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)  # (B, c_out, 1, 1) each
        z = self.norm2(z) * (1 + scale) + shift  # after the norm, so it is not removed
        z = self.conv2(self.act(z))
        return self.skip(h) + z


class ConvVectorField(nn.Module):
    r"""Class-conditional U-Net vector field ``v(t, x, c)`` on small square images.

    Args:
        image_shape: ``(C, H, W)`` with ``H == W``, e.g. ``(1, 8, 8)`` for digits or
            ``(1, 28, 28)`` for MNIST; an int ``s`` means ``(1, s, s)``.
        n_classes: Number of classes (0: unconditional, only the null class exists).
        width: Channels at full resolution (``2 width`` below it).
        emb_dim: Width of the time/class embedding.

    Shapes:
        ``t``: a float, a 0-d tensor or ``(B,)``; ``x``: ``(B, C*H*W)`` (flat, as the data
        loaders and the ODE layer use) or ``(B, C, H, W)``; ``cond``: ``None`` (the null
        class for every sample) or int64 ``(B,)`` with values in ``0..n_classes``
        (``n_classes`` = ∅). Output: the shape, dtype and device of ``x``.
    Raises:
        ValueError: bad shapes or labels out of range (at call time).
    Example:
        >>> field = ConvVectorField((1, 8, 8), n_classes=10, width=16)
        >>> field(0.5, torch.zeros(3, 64), torch.tensor([0, 7, 10])).shape
        torch.Size([3, 64])
    """

    def __init__(self, image_shape: tuple[int, int, int] | int = (1, 8, 8), n_classes: int = 10,
                 width: int = 32, emb_dim: int = 64) -> None:
        super().__init__()
        if isinstance(image_shape, int):
            image_shape = (1, image_shape, image_shape)
        if (not isinstance(image_shape, tuple | list) or len(image_shape) != 3
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                       for s in image_shape) or image_shape[1] != image_shape[2]):
            raise ValueError(f"`image_shape` must be (C, H, W) with H == W >= 1, got "
                             f"{image_shape!r}; e.g. (1, 8, 8) for digits.")
        self.image_shape: tuple[int, int, int] = (int(image_shape[0]), int(image_shape[1]),
                                                  int(image_shape[2]))
        self.n_classes = check_int("n_classes", n_classes, minimum=0)
        self.width = check_int("width", width, minimum=1)
        self.emb_dim = check_int("emb_dim", emb_dim, minimum=2)
        self.dim = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        c, side = self.image_shape[0], self.image_shape[1]
        self.levels = image_levels(side)
        chans = [width] + [2 * width] * (self.levels - 1)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(self.n_classes + 1, emb_dim)
        self.stem = nn.Conv2d(c, width, 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for k, ch in enumerate(chans):
            prev = chans[k - 1] if k else width
            self.down_blocks.append(_ResBlock(prev, ch, emb_dim))
            if k < self.levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = _ResBlock(chans[-1], chans[-1], emb_dim)
        self.up_blocks = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for k in reversed(range(self.levels)):
            below = chans[k + 1] if k < self.levels - 1 else chans[-1]
            if k < self.levels - 1:
                self.upsample.append(nn.Conv2d(below, chans[k], 3, padding=1))
            self.up_blocks.append(_ResBlock(2 * chans[k], chans[k], emb_dim))
        self.out_norm = nn.GroupNorm(_groups(width), width)
        self.out = nn.Conv2d(width, c, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)
        self.act = nn.SiLU()

    @property
    def null_class(self) -> int:
        """Index of the null class ∅ (``n_classes``)."""
        return self.n_classes

    def _labels(self, cond: Tensor | None, b: int, device: torch.device) -> Tensor:
        if cond is None:
            return torch.full((b,), self.n_classes, dtype=torch.long, device=device)
        if not isinstance(cond, Tensor) or cond.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"`cond` must be an int64 tensor of class labels (B,) = ({b},) or "
                            f"None, got {cond.dtype if isinstance(cond, Tensor) else cond!r}.")
        if cond.ndim == 0:
            cond = cond.expand(b)
        if cond.shape != (b,):
            raise ValueError(f"`cond` must have shape ({b},) to match `x`, got "
                             f"{tuple(cond.shape)}.")
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) > self.n_classes):
            raise ValueError(f"`cond` labels must lie in 0..{self.n_classes} (the last one is "
                             f"the null class), got range {int(cond.min())}..{int(cond.max())}.")
        return cond.to(device=device, dtype=torch.long)

    def forward(self, t: Tensor | float, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Evaluate ``v(t, x, cond)``; shapes in the class docstring."""
        x = check_tensor("x", x)
        flat = x.ndim == 2
        if (flat and x.shape[1] != self.dim) or (
                not flat and tuple(x.shape[1:]) != self.image_shape):
            raise ValueError(f"`x` must have shape (B, {self.dim}) or (B, "
                             f"{', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}.")
        b = x.shape[0]
        h = x.reshape(b, *self.image_shape)
        tb = expand_time(t, b, x)  # (B,)
        e = self.time_mlp(sinusoidal_embedding(tb, self.emb_dim))  # (B, E)
        e = self.act(e + self.class_emb(self._labels(cond, b, x.device)))
        h = self.stem(h)  # (B, width, H, W)
        skips = []
        for k, block in enumerate(self.down_blocks):
            h = block(h, e)
            skips.append(h)
            if k < self.levels - 1:
                h = self.downsample[k](h)
        h = self.mid(h, e)
        for k, block in enumerate(self.up_blocks):
            if k > 0:
                skip = skips[-1 - k]
                h = nn.functional.interpolate(h, size=skip.shape[-2:], mode="nearest")
                h = self.upsample[k - 1](h)
            h = block(torch.cat([h, skips[-1 - k]], dim=1), e)
        v = self.out(self.act(self.out_norm(h)))  # (B, C, H, W)
        return v.reshape(x.shape)

    def extra_repr(self) -> str:
        return (f"image_shape={self.image_shape}, n_classes={self.n_classes}, "
                f"width={self.width}, emb_dim={self.emb_dim}, levels={self.levels}")
