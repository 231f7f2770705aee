"""mmengine visualizer for CAPE episodes: draws them and sends the pictures to the backends."""
import os
import os.path as osp
from typing import Optional

import cv2
import numpy as np
from mmengine.dist import master_only
from mmengine.visualization import LocalVisBackend, Visualizer

from metapoint.registry import VISUALIZERS
from .episode_drawing import (EpisodeView, episode_view, render_episode_inputs,
                              render_prediction)


def publish_image(visualizer: Optional[Visualizer], name: str, image_bgr: np.ndarray,
                  step: int = 0, out_file: Optional[str] = None) -> None:
    """Write ``image_bgr`` to ``out_file`` (folders made) and hand it (RGB) to every backend of
    ``visualizer`` (rank 0 only, as mmengine does).

    With an ``out_file`` the ``LocalVisBackend`` is skipped: the picture is already on disk, and
    TensorBoard / W&B / MLflow backends still get it.
    """
    if out_file is not None:
        os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
        if not cv2.imwrite(out_file, image_bgr):
            raise OSError(f'could not write the visualisation {out_file}')
    if visualizer is not None:
        _to_backends(visualizer, name, image_bgr, step, skip_local=out_file is not None)


@master_only
def _to_backends(visualizer: Visualizer, name: str, image_bgr: np.ndarray, step: int,
                 skip_local: bool) -> None:
    rgb = np.ascontiguousarray(image_bgr[..., ::-1])
    for backend in getattr(visualizer, '_vis_backends', {}).values():
        if skip_local and isinstance(backend, LocalVisBackend):
            continue
        backend.add_image(name, rgb, step)


@VISUALIZERS.register_module()
class CAPEVisualizer(Visualizer):
    """An mmengine :class:`~mmengine.visualization.Visualizer` that draws CAPE episodes.

    Pictures are drawn with OpenCV in the model-input crops (see
    :mod:`metapoint.visualization.episode_drawing`); the last one drawn is also the visualizer's
    image (``get_image()``, RGB). Besides mmengine's arguments:

    Args:
        panel_size: height in pixels of each panel (crops are resized to it).
        radius: keypoint radius (None: from ``panel_size``, 3 px at 256).
        line_width: skeleton line width in pixels.
    """

    def __init__(self, name: str = 'visualizer', image: Optional[np.ndarray] = None,
                 vis_backends: Optional[list] = None, save_dir: Optional[str] = None,
                 panel_size: int = 256, radius: Optional[int] = None, line_width: int = 1,
                 fig_save_cfg: Optional[dict] = None,
                 fig_show_cfg: Optional[dict] = None) -> None:
        super().__init__(name=name, image=image, vis_backends=vis_backends, save_dir=save_dir,
                         fig_save_cfg=fig_save_cfg or dict(frameon=False),
                         fig_show_cfg=fig_show_cfg or dict(frameon=False))
        if int(panel_size) < 16:
            raise ValueError(f'CAPEVisualizer panel_size must be >= 16 pixels, got {panel_size}')
        if radius is not None and int(radius) < 1:
            raise ValueError(f'CAPEVisualizer radius must be >= 1 or None, got {radius}')
        self.panel_size = int(panel_size)
        self.radius = None if radius is None else int(radius)
        self.line_width = max(1, int(line_width))

    def episode_view(self, batch, index: int = 0, prediction: Optional[dict] = None
                     ) -> EpisodeView:
        """:func:`~metapoint.visualization.episode_view` with the category names and skeletons
        of ``dataset_meta`` (set by mmengine's loops from the dataset's metainfo)."""
        meta = self.dataset_meta or {}
        return episode_view(batch, index, prediction, meta.get('categories'))

    def _keep(self, canvas: np.ndarray) -> np.ndarray:
        self.set_image(np.ascontiguousarray(canvas[..., ::-1]))
        return canvas

    def draw_prediction(self, view: EpisodeView, max_queries: Optional[int] = None,
                        title: Optional[str] = None,
                        panel_size: Optional[int] = None) -> np.ndarray:
        """``support(s) | query ground truth | query prediction`` per query; BGR uint8."""
        return self._keep(render_prediction(view, panel_size or self.panel_size, max_queries,
                                            title, self.radius, self.line_width))

    def draw_episode_inputs(self, view: EpisodeView, show_heatmaps: bool = False,
                            title: Optional[str] = None) -> np.ndarray:
        """The episode's crops as the pipeline made them (padded slots, heatmaps); BGR."""
        return self._keep(render_episode_inputs(view, self.panel_size, show_heatmaps, title,
                                                self.radius, self.line_width))

    def add_episode(self, name: str, view: EpisodeView, step: int = 0,
                    out_file: Optional[str] = None, max_queries: Optional[int] = None,
                    title: Optional[str] = None,
                    panel_size: Optional[int] = None) -> np.ndarray:
        """Draw the prediction picture of ``view``, write it to ``out_file`` (if given) and send
        it to the backends (see :func:`publish_image`); returns it (BGR)."""
        canvas = self.draw_prediction(view, max_queries, title, panel_size)
        publish_image(self, name, canvas, step, out_file)
        return canvas
