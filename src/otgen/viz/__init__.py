"""Matplotlib figures from tensors (the only layer that imports matplotlib).

Functions return a :class:`matplotlib.figure.Figure` drawn on the Agg canvas (headless, no
pyplot state) and never call ``show()``; the caller saves it with ``fig.savefig(path)``.

``plot_image_grid`` exists twice with different inputs: :func:`otgen.viz.images.plot_image_grid`
takes flat images ``(n, H*W)`` in ``value_range``, :func:`otgen.viz.generative.plot_image_grid`
takes ``(n, h, w)``; neither is re-exported here, import it from its module.
"""

from otgen.viz.coupling import plot_coupling
from otgen.viz.dynamic import (
    animate_densities,
    animate_points,
    plot_density_frames,
    plot_paths,
    plot_quivers,
)
from otgen.viz.flows import plot_loss, plot_samples, plot_trajectories
from otgen.viz.generative import plot_training_curves
from otgen.viz.geometry import plot_decoded_paths, plot_latent_geometry, plot_vae_loss
from otgen.viz.gradflows import flow_animation, plot_energy, plot_frames, save_gif
from otgen.viz.images import plot_image_rows, tile_images

__all__ = [
    "plot_coupling", "plot_loss", "plot_samples", "plot_trajectories",
    "animate_densities", "animate_points", "plot_density_frames", "plot_paths", "plot_quivers",
    "plot_training_curves", "plot_decoded_paths", "plot_latent_geometry", "plot_vae_loss",
    "flow_animation", "plot_energy", "plot_frames", "save_gif", "plot_image_rows", "tile_images",
]
