"""Episode-level keypoint padding: how the slots K_c..K-1 of an episode are filled."""
from mmcv.transforms import BaseTransform

from metapoint.registry import TRANSFORMS

PADDING_TYPES = ('zero', )


@TRANSFORMS.register_module()
class KeypointPadding(BaseTransform):
    """Fill the padded keypoint slots of every image of an episode.

    Operates on a packed episode (``supports`` / ``queries`` lists of packed instances) so that a
    random padding can share one draw between the supports and the query. Types:

    * ``'zero'``: padded slots stay at (0, 0) with visibility and weight 0 (CapeFormer, MetaPoint).

    FMMP's 'eqdiv' and 'mixup' register here as further types.
    """

    def __init__(self, padding: str = 'zero', num: int = 70) -> None:
        super().__init__()
        if padding not in PADDING_TYPES:
            raise ValueError(f'unknown keypoint padding {padding!r}; available: {PADDING_TYPES}')
        self.padding = padding
        self.num = num

    def transform(self, episode: dict) -> dict:
        k = episode['supports'][0]['keypoints'].shape[0]
        if k != self.num:
            raise ValueError(f'KeypointPadding(num={self.num}) got episodes with {k} slots; '
                             'set num to the dataset max_kpt_num')
        # 'zero': the loader already wrote zeros with visibility 0 in the padded slots
        return episode

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(padding={self.padding!r}, num={self.num})'
