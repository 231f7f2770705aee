"""Export a trained CAPE model (MetaPoint, FMMP, CapeFormer) to ONNX (docs/deployment.md).

``python tools/deployment/export_onnx.py CONFIG CHECKPOINT --num-kpts K --shots S
[--input-size H W] [--opset N] [--out model.onnx] [--skeleton SPEC] [--static-queries Q]
[--normalized-input] [--check] [--cfg-options ...]``

One graph is one episode shape: K keypoints and S support shots, fixed; the query count Q is a
dynamic axis (``--static-queries Q`` fixes it). Graph inputs: ``support_imgs [S, 3, H, W]``
(raw 0-255 pixels in the loader's channel order, BGR; ``--normalized-input``: already
normalised by the model's data preprocessor), ``support_keypoints [S, K, 2]`` (normalised crop
(x, y) in [0, 1]), ``support_visible [S, K]`` (0/1), ``query_imgs [Q, 3, H, W]``; output
``pred_keypoints [Q, K, 2]`` (normalised crop (x, y)). The skeleton (FMMP's structural
neighbours; ``--skeleton "0-1,1-2"``, a JSON file or ``none``; default: the chain 0-1-2-...) is
fixed at export time. ``--check`` runs the graph with ONNX Runtime on the CPU on random inputs
and prints the max abs difference to PyTorch (the config's test pipeline and the model).
"""
import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402

from metapoint.apis.onnx_export import (DEFAULT_OPSET, ExportError,  # noqa: E402
                                        build_export_wrapper, check_onnx, check_opset,
                                        export_onnx)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='trained checkpoint (.pth)')
    parser.add_argument('--num-kpts', type=int, required=True,
                        help="K, real keypoints of the graph (at most the model's max_kpt_num)")
    parser.add_argument('--shots', type=int, required=True, help='S, support shots of the graph')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help="crop size, height width (default: the config's)")
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default and minimum {DEFAULT_OPSET})")
    parser.add_argument('--out', default=None,
                        help='output file (default work_dirs/onnx/<config>_k<K>_s<S>.onnx)')
    parser.add_argument('--skeleton', default=None,
                        help='links of the K keypoints: "0-1,1-2", a JSON file (list of pairs or '
                             'an object with "skeleton"), or "none"; default the chain')
    parser.add_argument('--static-queries', type=int, default=None, metavar='Q',
                        help='fix the query count to Q instead of a dynamic axis')
    parser.add_argument('--normalized-input', action='store_true',
                        help="images enter already normalised (the model's data preprocessor "
                             'is not in the graph)')
    parser.add_argument('--check', action='store_true',
                        help='compare ONNX Runtime (CPU) with PyTorch on random inputs')
    parser.add_argument('--check-tol', type=float, default=1e-4,
                        help='--check fails above this max abs difference (default 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def load_model(config: str, checkpoint: str, cfg_options=None):
    """The config's model with the checkpoint's weights, strictly (every key must match; the
    backbone's ``pretrained`` is not read). The config is attached as ``model.cfg``."""
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from metapoint.models.backbones import disable_backbone_pretrained
    from metapoint.registry import MODELS
    from metapoint.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    disable_backbone_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    try:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    except RuntimeError as e:
        detail = ' '.join(str(e).split())
        raise ExportError(f'checkpoint {checkpoint!r} does not match the model of {config}: '
                          f'{detail[:500]}') from e
    model.cfg = cfg
    return model.eval()


def main(argv=None) -> dict:
    """Export (and check); returns a summary dict. Raises :class:`ExportError` on bad input."""
    args = parse_args(argv)
    check_opset(args.opset)
    if not osp.isfile(args.config):
        raise ExportError(f'config {args.config!r} does not exist')
    if not osp.isfile(args.checkpoint):
        raise ExportError(f'checkpoint {args.checkpoint!r} does not exist')
    if args.static_queries is not None and args.static_queries < 1:
        raise ExportError(f'--static-queries must be >= 1, got {args.static_queries}')
    model = load_model(args.config, args.checkpoint, args.cfg_options)
    cfg = model.cfg
    input_size = None if args.input_size is None else (args.input_size[1], args.input_size[0])
    wrapper = build_export_wrapper(model, cfg, args.num_kpts, args.shots, input_size,
                                   args.skeleton, normalize=not args.normalized_input)
    spec = wrapper.spec
    stem = osp.splitext(osp.basename(args.config))[0]
    out = args.out or osp.join('work_dirs', 'onnx', f'{stem}_k{spec.num_kpts}_s{spec.shots}.onnx')
    metadata = spec.metadata()
    metadata.update(config=json.dumps(osp.basename(args.config)),
                    checkpoint=json.dumps(osp.basename(args.checkpoint)))
    start = time.time()
    queries = args.static_queries or 2
    summary = export_onnx(wrapper, out, opset=args.opset, queries=queries,
                          dynamic_queries=args.static_queries is None, metadata=metadata)
    summary['export_s'] = round(time.time() - start, 1)
    w, h = spec.input_size
    q = 'Q' if args.static_queries is None else str(args.static_queries)
    print(f'{spec.model_type} -> {out} ({summary["exporter"]}, opset {args.opset}, '
          f'{summary["export_s"]} s)')
    print(f'  inputs : support_imgs [{spec.shots}, 3, {h}, {w}] '
          f'({"normalised" if args.normalized_input else "raw 0-255"}'
          f'{", BGR" if spec.bgr_to_rgb and not args.normalized_input else ""}), support_keypoints '
          f'[{spec.shots}, {spec.num_kpts}, 2], support_visible [{spec.shots}, {spec.num_kpts}], '
          f'query_imgs [{q}, 3, {h}, {w}]')
    print(f'  output : pred_keypoints [{q}, {spec.num_kpts}, 2] (normalised crop x, y); '
          f'{spec.max_kpt_num} slots inside, padding {spec.padding!r}'
          + (f', skeleton {spec.skeleton}' if spec.neighbours else ''))
    if args.check:
        queries = (args.static_queries, ) if args.static_queries else (1, 3)
        result = check_onnx(out, wrapper, model, cfg, queries=queries)
        summary['check'] = result
        print(f'  check  : ONNX Runtime (CPU) vs PyTorch, queries {result["queries"]}: max abs '
              f'diff {result["max_abs_diff_vs_pipeline"]:.3g} vs the test pipeline + model, '
              f'{result["max_abs_diff_vs_eager"]:.3g} vs the exported module in eager mode')
        worst = max(result['max_abs_diff_vs_pipeline'], result['max_abs_diff_vs_eager'])
        if worst > args.check_tol:
            raise ExportError(f'--check: max abs difference {worst:.3g} exceeds --check-tol '
                              f'{args.check_tol:g}')
    return summary


if __name__ == '__main__':
    try:
        main()
    except ExportError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
