"""Matplotlib figures from tensors (the only layer that imports matplotlib).

Functions return a :class:`matplotlib.figure.Figure` drawn on the Agg canvas (headless, no
pyplot state) and never call ``show()``; the caller saves it with ``fig.savefig(path)``.
"""

from otgen.viz.coupling import plot_coupling

__all__ = ["plot_coupling"]
