from .cape_inputs import (CapeInputError, SupportSpec, check_supports, load_query_bboxes,
                          load_query_image, load_support_spec, model_max_kpt_num, parse_bbox,
                          predict_cape, predictions_to_json, read_image, render_cape_overlay)
from .inference import inference_episode, init_estimator

__all__ = ['CapeInputError', 'SupportSpec', 'check_supports', 'inference_episode',
           'init_estimator', 'load_query_bboxes', 'load_query_image', 'load_support_spec',
           'model_max_kpt_num', 'parse_bbox', 'predict_cape', 'predictions_to_json',
           'read_image', 'render_cape_overlay']
