"""Registries of the ``metapoint`` scope.

Every registry is a child of the matching mmengine root registry, so configs that set
``default_scope = 'metapoint'`` build our classes first and fall back to mmengine's. The
transform registry is a child of mmpose's transform registry instead, so mmpose 1.x top-down
transforms (``TopdownAffine``, ``GetBBoxCenterScale``, ...) can be named in a pipeline without a
scope prefix. Only ``mmpose.datasets.transforms`` is ever imported from mmpose here: never
``mmpose.models`` / ``mmpose.visualization`` (they need compiled mmcv ops).

Model configs built through :data:`MODELS` are checked against the constructor they name: a key
the class does not take raises and lists the valid ones (:mod:`metapoint.utils.config_checks`).
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry
from mmpose.registry import TRANSFORMS as MMPOSE_TRANSFORMS

from metapoint.utils.config_checks import build_model_checked

DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['metapoint.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, locations=['metapoint.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMPOSE_TRANSFORMS, locations=['metapoint.datasets.transforms'])
FUNCTIONS = Registry('function', parent=MMENGINE_FUNCTIONS, locations=['metapoint.datasets'])

#: model configs are checked against the constructor they name (unknown keys raise, listing
#: the valid ones) before mmengine builds them
MODELS = Registry('model', parent=MMENGINE_MODELS, build_func=build_model_checked,
                  locations=['metapoint.models'])
TASK_UTILS = Registry('task util', parent=MMENGINE_TASK_UTILS, locations=['metapoint.models'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, locations=['metapoint.engine'])

HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['metapoint.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, locations=['metapoint.engine'])
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS)
OPTIM_WRAPPERS = Registry('optim wrapper', parent=MMENGINE_OPTIM_WRAPPERS,
                          locations=['metapoint.engine'])
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS)

METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=['metapoint.evaluation'])
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, locations=['metapoint.evaluation'])

VISUALIZERS = Registry(
    'visualizer', parent=MMENGINE_VISUALIZERS, locations=['metapoint.visualization'])
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS)
