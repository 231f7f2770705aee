"""Deterministic synthetic MP-100-style CAPE data (no downloads).

Modules: :mod:`.poses` (pose sources: random categories or real MP-100 annotations),
:mod:`.render` (OpenCV rendering of one instance), :mod:`.calibration` (SupportCopy baseline
PCK used to calibrate difficulty), :mod:`.writer` (writes the data set folder). Command line:
``tools/dataset_converters/make_synthetic_mp100.py``; documentation: ``docs/synthetic_data.md``.
"""
from .calibration import pair_pck, support_copy_pck
from .poses import (CategorySpec, PoseSample, load_mp100_poses, random_pose_source,
                    skeleton_index_base, skeleton_to_zero_indexed)
from .render import (MARKER_COLOURS, MARKER_POOL, MARKER_SHAPES, CategoryStyle, RenderConfig,
                     RenderResult, draw_marker, make_category_style, render_instance)
from .writer import (GENERATOR_VERSION, category_folder, generate_dataset, make_random_splits,
                     official_splits)

__all__ = [
    'pair_pck', 'support_copy_pck', 'CategorySpec', 'PoseSample', 'load_mp100_poses',
    'random_pose_source', 'skeleton_index_base', 'skeleton_to_zero_indexed', 'MARKER_COLOURS',
    'MARKER_POOL',
    'MARKER_SHAPES', 'CategoryStyle', 'RenderConfig', 'RenderResult', 'draw_marker',
    'make_category_style', 'render_instance', 'GENERATOR_VERSION', 'category_folder',
    'generate_dataset', 'make_random_splits', 'official_splits'
]
