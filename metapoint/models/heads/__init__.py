from .recurrent_fgsa_predictor import RecurrentFGSAPredictor
from .support_keypoint_features import HeatmapKeypointPooling

__all__ = ['HeatmapKeypointPooling', 'RecurrentFGSAPredictor']
