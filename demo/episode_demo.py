"""Run a CAPE model on one evaluation episode of a config's test set and save a picture.

    python demo/episode_demo.py CONFIG [CHECKPOINT] [--episode 0] [--out demo.png]

Left: the support(s) with their annotated keypoints; right: each query with the predictions
(filled dots) and the ground truth (crosses), one colour per keypoint index. The crops shown are
the model inputs, so predictions are drawn in crop pixels.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from metapoint.apis import init_estimator  # noqa: E402
from metapoint.datasets import episode_collate  # noqa: E402
from metapoint.registry import DATASETS  # noqa: E402
from metapoint.visualization import draw_keypoints, tile_images  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None)
    parser.add_argument('--episode', type=int, default=0, help='evaluation episode index')
    parser.add_argument('--out', default='demo_episode.png')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = init_estimator(cfg, args.checkpoint)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    episode = dataset[args.episode]
    batch = episode_collate([episode])
    points = model(**model.data_preprocessor(batch), mode='tensor')[0].cpu().numpy()
    n = episode['num_kpts']
    tiles, captions = [], []
    for role, insts in (('support', episode['supports']), ('query', episode['queries'])):
        for i, inst in enumerate(insts):
            img = inst['img'].permute(1, 2, 0).numpy().copy()
            size = np.array(inst['meta']['input_size'], np.float32)
            gt = inst['keypoints'][:n].numpy() * size
            vis = inst['keypoints_visible'][:n].numpy()
            if role == 'support':
                img = draw_keypoints(img, gt, vis, episode['skeleton'])
            else:
                img = draw_keypoints(img, gt, vis, (), marker='cross')
                img = draw_keypoints(img, points[i, :n] * size, vis, episode['skeleton'])
            tiles.append(img)
            captions.append(f'{role} {i}')
    canvas = tile_images(tiles, height=256, captions=captions)
    cv2.imwrite(args.out, canvas)
    print(f'category {episode["category_id"]}: wrote {args.out} ({canvas.shape[1]}x{canvas.shape[0]})')


if __name__ == '__main__':
    main()
