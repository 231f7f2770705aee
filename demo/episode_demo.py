"""Run a CAPE model on one evaluation episode of a config's test set and save a picture.

    python demo/episode_demo.py CONFIG [CHECKPOINT] [--episode 0] [--out demo.png] \
        [--device cpu|cuda] [--cfg-options KEY=VALUE ...]

Left: the support(s) with their annotated keypoints; right: each query with the predictions
(filled dots) and the ground truth (crosses), one colour per keypoint index. The crops shown are
the model inputs, so predictions are drawn in crop pixels. Without CHECKPOINT the model keeps
the weights its config builds (random or ImageNet backbone): only useful to check the plumbing.
See docs/demo.md.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from metapoint.apis import init_estimator  # noqa: E402
from metapoint.datasets import episode_collate  # noqa: E402
from metapoint.registry import DATASETS  # noqa: E402
from metapoint.visualization import draw_keypoints, tile_images  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='model weights (.pth with a state_dict); omit for untrained weights')
    parser.add_argument('--episode', type=int, default=0, help='evaluation episode index')
    parser.add_argument('--out', default='demo_episode.png', help='output picture (PNG / JPG)')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                             'test_dataloader.dataset.data_root=data/synthetic_mp100')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    """Run the demo; returns the path of the written picture."""
    args = parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: CUDA is not available on this machine')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model = init_estimator(cfg, args.checkpoint, device=args.device)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if not 0 <= args.episode < len(dataset):
        raise SystemExit(f'--episode {args.episode}: the test set of {args.config} has '
                         f'{len(dataset)} episodes (0..{len(dataset) - 1})')
    episode = dataset[args.episode]
    batch = episode_collate([episode])
    with torch.no_grad():  # inference only: no autograd graph
        points = model(**model.data_preprocessor(batch), mode='tensor')[0].cpu().numpy()
    n = episode['num_kpts']
    # the category's own links (an episode pipeline may have added links to padded slots)
    category = getattr(dataset, 'categories', {}).get(episode['category_id'])
    skeleton = category.skeleton if category is not None else episode['skeleton']
    tiles, captions = [], []
    for role, insts in (('support', episode['supports']), ('query', episode['queries'])):
        for i, inst in enumerate(insts):
            img = inst['img'].permute(1, 2, 0).numpy().copy()
            size = np.array(inst['meta']['input_size'], np.float32)
            gt = inst['keypoints'][:n].numpy() * size
            vis = inst['keypoints_visible'][:n].numpy()
            if role == 'support':
                img = draw_keypoints(img, gt, vis, skeleton)
            else:
                img = draw_keypoints(img, gt, vis, (), marker='cross')
                img = draw_keypoints(img, points[i, :n] * size, vis, skeleton)
            tiles.append(img)
            captions.append(f'{role} {i}')
    canvas = tile_images(tiles, height=256, captions=captions)
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    if not cv2.imwrite(args.out, canvas):
        raise SystemExit(f'--out {args.out}: could not write the picture (unknown extension?)')
    print(f'category {episode["category_id"]}: wrote {args.out} '
          f'({canvas.shape[1]}x{canvas.shape[0]})')
    return args.out


if __name__ == '__main__':
    main()
