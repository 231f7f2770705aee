"""Predict a support's keypoints on your own query images with a CAPE model.

    python demo/cape_demo.py CONFIG [CHECKPOINT] --support support.json [--support more.json] \
        --query q1.jpg [q2.jpg ...] [--query-bbox x y w h [x y w h ...] | --query-bbox boxes.json] \
        [--out-dir cape_demo_out] [--device cpu|cuda] [--cfg-options KEY=VALUE ...]

Each support JSON holds {"image": ..., "keypoints": [[x, y] or [x, y, v], ...], optional
"names", "skeleton" (0-indexed pairs) and "bbox" [x, y, w, h]}; several supports are the shots
of one episode and must have the same keypoints. A query without a box uses its whole image.
Writes, under --out-dir, one overlay PNG per query (supports with their keypoints, then the query
with the predictions) and predictions.json (keypoints in query image pixels). See docs/demo.md.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cv2  # noqa: E402
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from metapoint.apis import (CapeInputError, check_supports, init_estimator,  # noqa: E402
                            load_query_bboxes, load_support_spec, model_max_kpt_num,
                            predict_cape, predictions_to_json, read_image, render_cape_overlay)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='model config (.py)')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='model weights (.pth with a state_dict); omit only for models '
                             'without weights (SupportCopy) or to check the plumbing')
    parser.add_argument('--support', action='append', nargs='+', required=True,
                        metavar='JSON', help='support description(s); repeat or list several '
                                             'for a few-shot episode')
    parser.add_argument('--query', nargs='+', required=True, metavar='IMAGE',
                        help='query image file(s)')
    parser.add_argument('--query-bbox', nargs='+', default=None, metavar='X_Y_W_H_OR_JSON',
                        help='object box per query: 4 numbers (x y w h) per query in query '
                             'order, or a JSON file (list per query, or {image: box}); '
                             'default: the whole image')
    parser.add_argument('--out-dir', default='cape_demo_out', help='output folder')
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--height', type=int, default=384, help='overlay picture height')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries (KEY=VALUE)')
    args = parser.parse_args(argv)
    args.support = [p for group in args.support for p in group]
    return args


def _query_bbox_value(values: Optional[List[str]]):
    """The --query-bbox words -> None, a JSON path or a list of numbers."""
    if values is None:
        return None
    if len(values) == 1 and not _is_number(values[0]):
        return values[0]
    bad = [v for v in values if not _is_number(v)]
    if bad:
        raise CapeInputError('--query-bbox', 'bbox', f'{bad[0]!r} is not a number (give '
                             '4 numbers per query, or one JSON file)')
    return [float(v) for v in values]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unique_name(out_dir: str, stem: str, used: set) -> str:
    name, n = f'{stem}_cape.png', 1
    while name in used:
        n += 1
        name = f'{stem}_{n}_cape.png'
    used.add(name)
    return osp.join(out_dir, name)


def run(args: argparse.Namespace) -> dict:
    """Load and check the inputs, run the model, write the overlays and predictions.json;
    returns the predictions record (:func:`~metapoint.apis.predictions_to_json`) with each
    query's ``"overlay"`` path added."""
    supports = [load_support_spec(p) for p in args.support]
    check_supports(supports)
    queries = [read_image(q, q, 'query image') for q in args.query]
    boxes = load_query_bboxes(_query_bbox_value(args.query_bbox), args.query)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: CUDA is not available on this machine')
    model = init_estimator(args.config, args.checkpoint, device=args.device,
                           cfg_options=args.cfg_options)
    if args.checkpoint is None and any(p.requires_grad for p in model.parameters()):
        print(f'warning: no checkpoint given: {type(model).__name__} predicts with untrained '
              'weights', file=sys.stderr)
    check_supports(supports, model_max_kpt_num(model))
    preds = predict_cape(model, supports, queries, boxes)

    os.makedirs(args.out_dir, exist_ok=True)
    record = predictions_to_json(preds, supports, args.query, [q.shape for q in queries], boxes)
    used: set = set()
    k = supports[0].num_kpts
    print(f'{type(model).__name__} on {args.device}: {k} keypoints, {len(supports)} '
          f'support(s), {len(queries)} query image(s)')
    for q_path, img, pred, box, entry in zip(args.query, queries, preds, boxes,
                                             record['queries']):
        out = _unique_name(args.out_dir, osp.splitext(osp.basename(q_path))[0], used)
        canvas = render_cape_overlay(supports, img, pred, box, args.height,
                                     query_caption=osp.basename(q_path))
        if not cv2.imwrite(out, canvas):
            raise SystemExit(f'--out-dir {args.out_dir}: could not write {out}')
        entry['overlay'] = out
        where = 'whole image' if box is None else 'box ' + ' '.join(f'{v:g}' for v in box)
        print(f'  {q_path} ({img.shape[1]}x{img.shape[0]}, {where}): '
              f'{sum(entry["inside_image"])}/{k} keypoints inside the image -> {out}')
    json_path = osp.join(args.out_dir, 'predictions.json')
    with open(json_path, 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=2)
    print(f'predictions (query image pixels): {json_path}')
    return record


def main(argv: Optional[List[str]] = None) -> dict:
    """Command-line entry; bad input exits with a message naming the file and the field."""
    args = parse_args(argv)
    try:
        return run(args)
    except CapeInputError as e:
        raise SystemExit(f'cape_demo: error: {e}') from e


if __name__ == '__main__':
    main()
