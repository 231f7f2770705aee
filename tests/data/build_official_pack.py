"""Build the compressed official-output fixtures that the parity tests read (tests/data/official).

The numbers come from the official MetaPoint / FMMP / CapeFormer implementations (a fixture
folder with ``{metapoint,fmmp}_s1.{manifest.json,inputs.pt,outputs.pt,grads.pt}``,
``capeformer_s1.{manifest.json,inputs.pt,outputs.pt}`` and ``functions.pt``; no official code, no
checkpoint: the weights are rebuilt from a seeded rule, see ``tests/helpers.py::rule_state_dict``).
This script keeps only what the tests compare, stores the synthetic images once (all models were
fed the same ones), keeps full gradients as per-tensor scaled float16 (the gradient tolerances are
1e-2 relative and looser), and writes one xz-compressed ``torch.save`` file per model::

    python tests/data/build_official_pack.py FIXTURE_DIR [--out tests/data/official]

Every kept tensor is bit-identical to the source except the float16 gradients (relative error
below 1e-3 of each tensor's max; ``tests/test_official_pack.py`` checks both when the source
folder is available). The CapeFormer inputs are not stored: they are the MetaPoint inputs with the
keypoint axis zero-padded from 70 to 100 slots (checked bit for bit here; the pack records
``inputs = {'padded_from': 'metapoint_s1', 'num_slots': 100}`` and
``tests/helpers.py::load_official_fixture`` rebuilds them).
"""
import argparse
import hashlib
import io
import json
import lzma
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers import first_difference, pad_keypoint_slots  # noqa: E402

#: what the tests read from each source file ('a/b' = key b of entry a; a key keeps its subtree)
KEEP = {
    'metapoint_s1.inputs.pt': ['target_s', 'target_q', 'target_weight_s', 'target_weight_q',
                               'img_metas/sample_joints_3d', 'img_metas/query_joints_3d',
                               'category_keypoint_num'],
    'metapoint_s1.outputs.pt': [
        f'eval/{key}'
        for key in ('matcher_args/covisibles', 'meta_points_q', 'meta_points_s', 'meta_to_kp',
                    'meta_visible_q', 'meta_visible_s', 'ref_decoder_in_sk_feats',
                    'ref_init_points', 'ref_points_q', 'sk_feats_enhanced')] + ['train/losses'],
    'fmmp_s1.inputs.pt': ['category_keypoint_num', 'headwise_refpoint_idxs', 'points',
                          'visibles'],
    'fmmp_s1.outputs.pt': [
        f'eval/{key}'
        for key in ('decoder_embed', 'init_keypoint_embed', 'kpt_branch_delta', 'pred_points',
                    'query_order', 'support_embed', 'support_ref_pos')]
    + ['train/losses', 'train/pred_points'],
    'capeformer_s1.outputs.pt': [
        f'eval/{key}'
        for key in ('pred_points', 'ref_points', 'proposals_local', 'proposals_global',
                    'similarity_map', 'kpt_delta_ref', 'kpt_delta_out', 'support_pooled_c5',
                    'support_tokens', 'query_feat_proj', 'order_pe', 'map_pe', 'debug_stats',
                    'result')]
    + [f'train/{key}'
       for key in ('pred_points', 'ref_points', 'proposals_local', 'proposals_global',
                   'similarity_map', 'kpt_delta_ref', 'kpt_delta_out', 'support_tokens',
                   'debug_stats', 'losses', 'loss_total', 'acc_pose', 'grad_stats')]
    + ['info'],
    'functions.pt': ['ms_deform_attn_core_pytorch', 'get_ref_feat', 'inverse_sigmoid',
                     'sine_positional_encoding', 'hypercfg', 'metapoint_losses',
                     'topdown_generate_target_msra_sigma2', 'fmmp_padding',
                     'side_ref_idx_big_chain'],
}
GRAD_INFO_KEYS = ('loss_terms', 'loss_values', 'loss_total', 'parameters_without_grad',
                  'full_grads_keys', 'threads', 'commit', 'source')
STAT_KEYS = ('sum', 'abs_sum', 'l2', 'ramp_sum', 'max_abs', 'numel', 'shape')


def prune(obj, paths):
    """The part of nested dicts/lists ``obj`` reached by ``paths`` ('a/b/c'); lists of dicts
    are pruned element-wise."""
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return [prune(item, paths) for item in obj]
    heads = {}
    for path in paths:
        head, _, rest = path.partition('/')
        heads.setdefault(head, []).append(rest)
    out = {}
    for head, rests in heads.items():
        if head not in obj:
            raise KeyError(f'fixture has no entry {head!r}')
        out[head] = obj[head] if '' in rests else prune(obj[head], [r for r in rests if r])
    return out


#: official key prefixes of the prediction heads (the tight gradient tolerance group)
HEAD_PREFIXES = ('meta_decoder.point_heads.', 'ref_decoder.point_heads.', 'visible_head.',
                 'predictor.kpt_branch.')


def pack_grads(src: dict) -> dict:
    """Gradient statistics of every parameter; full gradients scaled by max |g| and stored as
    float16 (prediction heads, tolerance 1e-2) or int8 (the rest, tolerance 0.2)."""
    full = {}
    for key, g in src['grads'].items():
        scale = g.abs().max().clamp_min(1e-30)
        if key.startswith(HEAD_PREFIXES):
            full[key] = dict(scale=scale.float(), half=(g / scale).half())
        else:
            full[key] = dict(scale=scale.float(), int8=(g / scale * 127).round().to(torch.int8))
    return dict(info={k: src['info'][k] for k in GRAD_INFO_KEYS if k in src['info']},
                stats={k: {f: v[f] for f in STAT_KEYS} for k, v in src['stats'].items()},
                grads=full)


def write_xz(obj, path: Path) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME)
    path.write_bytes(data)
    return len(data)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack_padded_run(src: Path, model: str, inputs_of: str, base_inputs: dict, out: Path) -> int:
    """Pack a run whose inputs are ``inputs_of``'s (``base_inputs``, its full source inputs) with
    more, zero keypoint slots: verify that bit for bit (images included) and store only the
    manifest, the kept outputs and ``inputs = {'padded_from', 'num_slots'}``."""
    inputs = torch.load(src / f'{model}.inputs.pt', map_location='cpu', weights_only=True)
    num_slots = inputs['target_q'].shape[1]
    rebuilt = pad_keypoint_slots(prune(base_inputs, KEEP[f'{inputs_of}.inputs.pt']), num_slots)
    rebuilt.update(img_s=base_inputs['img_s'], img_q=base_inputs['img_q'])
    diff = first_difference(rebuilt, inputs)
    if diff:
        raise ValueError(f'{model} inputs are not the {inputs_of} inputs padded to {num_slots} '
                         f'slots (first difference: {diff}); pack them explicitly')
    outputs = torch.load(src / f'{model}.outputs.pt', map_location='cpu', weights_only=True)
    pack = dict(manifest=json.loads((src / f'{model}.manifest.json').read_text()),
                inputs=dict(padded_from=inputs_of, num_slots=num_slots),
                outputs=prune(outputs, KEEP[f'{model}.outputs.pt']))
    return write_xz(pack, out / f'{model}.pt.xz')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', type=Path, help='folder with the official fixture files')
    parser.add_argument('--out', type=Path, default=Path(__file__).parent / 'official')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def load(name):
        return torch.load(args.src / name, map_location='cpu', weights_only=True)

    sources = {}
    mp_in, fm_in = load('metapoint_s1.inputs.pt'), load('fmmp_s1.inputs.pt')
    support, query = mp_in['img_s'][0], mp_in['img_q']
    if len(mp_in['img_s']) != 1 or not (torch.equal(fm_in['imgs'][:, 0], support)
                                        and torch.equal(fm_in['imgs'][:, 1], query)):
        raise ValueError('MetaPoint and FMMP fixtures were expected to share their images')
    sizes = {'images.pt.xz': write_xz(dict(support=support, query=query),
                                      args.out / 'images.pt.xz')}
    for model in ('metapoint_s1', 'fmmp_s1'):
        manifest = json.loads((args.src / f'{model}.manifest.json').read_text())
        pack = dict(manifest=manifest,
                    inputs=prune(load(f'{model}.inputs.pt'), KEEP[f'{model}.inputs.pt']),
                    outputs=prune(load(f'{model}.outputs.pt'), KEEP[f'{model}.outputs.pt']))
        sizes[f'{model}.pt.xz'] = write_xz(pack, args.out / f'{model}.pt.xz')
        if (args.src / f'{model}.grads.pt').is_file():
            sizes[f'{model}.grads.pt.xz'] = write_xz(pack_grads(load(f'{model}.grads.pt')),
                                                     args.out / f'{model}.grads.pt.xz')
        for part in ('manifest.json', 'inputs.pt', 'outputs.pt', 'grads.pt'):
            if (args.src / f'{model}.{part}').is_file():
                sources[f'{model}.{part}'] = sha256(args.src / f'{model}.{part}')
    sizes['capeformer_s1.pt.xz'] = pack_padded_run(args.src, 'capeformer_s1', 'metapoint_s1',
                                                   mp_in, args.out)
    for part in ('manifest.json', 'inputs.pt', 'outputs.pt'):
        sources[f'capeformer_s1.{part}'] = sha256(args.src / f'capeformer_s1.{part}')
    sizes['functions.pt.xz'] = write_xz(prune(load('functions.pt'), KEEP['functions.pt']),
                                        args.out / 'functions.pt.xz')
    sources['functions.pt'] = sha256(args.src / 'functions.pt')
    (args.out / 'SOURCES.json').write_text(json.dumps(
        dict(sha256_of_source_files=sources, packed_bytes=sizes), indent=1) + '\n')
    for name, size in sizes.items():
        print(f'{name:28s} {size / 1e6:6.2f} MB')
    print(f'total {sum(sizes.values()) / 1e6:.2f} MB -> {args.out}')


if __name__ == '__main__':
    main()
