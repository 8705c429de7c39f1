"""Matplotlib figures from tensors (the only layer that imports matplotlib).

Functions return a :class:`matplotlib.figure.Figure` drawn on the Agg canvas (headless, no
pyplot state) and never call ``show()``; the caller saves it with ``fig.savefig(path)``.
"""

from otgen.viz.coupling import plot_coupling
from otgen.viz.flows import plot_loss, plot_samples, plot_trajectories

__all__ = ["plot_coupling", "plot_loss", "plot_samples", "plot_trajectories"]
