"""Regenerate ``source.csv`` and ``target.csv`` (fixed seed; run from anywhere).

source.csv: 300 points of an anisotropic Gaussian blob, columns ``x,y`` (uniform weights).
target.csv: 400 points on a noisy ring of radius 2 centred at (4, 1), columns ``x,y,weight``;
            weights grow with the angle (heavier on the upper half), unnormalised.
"""

from pathlib import Path

import numpy as np

rng = np.random.default_rng(0)
here = Path(__file__).resolve().parent

src = rng.normal(size=(300, 2)) @ np.array([[0.8, 0.3], [0.0, 0.5]])  # (300, 2)
theta = rng.uniform(0.0, 2.0 * np.pi, size=400)
ring = np.column_stack([np.cos(theta), np.sin(theta)]) * (2.0 + 0.15 * rng.normal(size=(400, 1)))
tgt = ring + np.array([4.0, 1.0])  # (400, 2)
weight = 1.0 + np.sin(theta) + 0.25  # in [0.25, 2.25]

np.savetxt(here / "source.csv", src, fmt="%.6f", delimiter=",", header="x,y", comments="")
np.savetxt(
    here / "target.csv",
    np.column_stack([tgt, weight]),
    fmt="%.6f",
    delimiter=",",
    header="x,y,weight",
    comments="",
)
