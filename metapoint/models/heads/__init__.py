from .recurrent_fgsa_predictor import RecurrentFGSAPredictor
from .similarity_aid import SimilarityAid
from .support_keypoint_features import HeatmapKeypointPooling

__all__ = ['HeatmapKeypointPooling', 'RecurrentFGSAPredictor', 'SimilarityAid']
