from .keypoint_eval import (AUC_NUM_STEPS, CATEGORY_THRESHOLD, DEFAULT_THRESHOLDS,
                            EMPTY_MASK_MODES, MPCK_5THR_THRESHOLDS, MPCK_THRESHOLDS,
                            auc_per_pair, check_empty_mask, check_thresholds, epe_per_pair,
                            nme_per_pair, normalised_distances, pair_masks, pck_key,
                            pck_per_pair, pixel_distances, summarize_cape)

__all__ = [
    'AUC_NUM_STEPS', 'CATEGORY_THRESHOLD', 'DEFAULT_THRESHOLDS', 'EMPTY_MASK_MODES',
    'MPCK_5THR_THRESHOLDS', 'MPCK_THRESHOLDS', 'auc_per_pair', 'check_empty_mask',
    'check_thresholds', 'epe_per_pair', 'nme_per_pair', 'normalised_distances', 'pair_masks',
    'pck_key', 'pck_per_pair', 'pixel_distances', 'summarize_cape'
]
