"""CapeFormer configs and the cross-super-category splits.

* The official-protocol configs (5 splits x 1 / 5 shots) carry the official CapeFormer recipe and
  read the per-split files in file order; the ``_unified`` variants differ only in reading the
  unified file with the split lists; the CPU config is a budget variant.
* The cross-super-category lists (``configs/_base_/datasets/mp100_cross_category.py``) are
  consistent, and each model's cross configs read exactly them; with the real MP-100 annotation
  files (optional test data) the lists are checked against the category records.
* The model of the split-1 configs builds, trains one step and predicts (ResNet-18, 64 px).
"""
import copy
import json
import os
import subprocess

import pytest
import torch
from mmengine.config import Config

from metapoint.datasets.collate import episode_collate
from metapoint.registry import DATASETS, MODELS
from metapoint.utils import register_all_modules
from tests.helpers import MP100_ANN_DIR, REPO, skip_without

CAPE_DIR = REPO / 'configs' / 'capeformer'
OFFICIAL = [CAPE_DIR / f'capeformer_r50_1xb16_mp100-split{split}_{shots}shot.py'
            for split in range(1, 6) for shots in (1, 5)]
UNIFIED = [p.with_name(f'{p.stem}_unified.py') for p in OFFICIAL]
CPU = CAPE_DIR / 'capeformer_r18_1xb8_synthetic-real-split1_1shot_cpu.py'
CROSS_BASE = REPO / 'configs' / '_base_' / 'datasets' / 'mp100_cross_category.py'
CROSS_SPLITS = ('human_body', 'human_face', 'vehicle', 'furniture')
#: model -> (config prefix, the config its cross configs must equal apart from the categories)
CROSS_MODELS = {
    'capeformer': ('capeformer_r50_1xb16',
                   CAPE_DIR / 'capeformer_r50_1xb16_mp100-split1_1shot_unified.py'),
    'metapoint': ('metapoint_r50_4xb16',
                  REPO / 'configs/metapoint/metapoint_r50_4xb16_mp100-split1_1shot.py'),
    'fmmp': ('fmmp_r50_1xb16', REPO / 'configs/fmmp/fmmp_r50_1xb16_mp100-split1_1shot.py'),
}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
ROLES = dict(zip(LOADERS, ('train', 'val', 'test')))
THRESHOLDS = [0.05, 0.10, 0.15, 0.20, 0.25]


def _cross_path(model, split):
    prefix = CROSS_MODELS[model][0]
    return (REPO / 'configs' / model / 'cross_category' /
            f'{prefix}_mp100-cross-{split.replace("_", "-")}_1shot.py')


def _split_shots(path):
    stem = path.stem.replace('_unified', '')
    split = int(stem.split('-split')[1][0])
    shots = int(stem.rsplit('_', 1)[1][0])
    return split, shots


def _cross_table():
    return Config.fromfile(str(CROSS_BASE)).mp100_cross_category


def _steps(pipeline, kind):
    return [step for step in pipeline if step['type'] == kind]


# ------------------------------------------------------------------------- official protocol
def test_every_capeformer_config_is_covered():
    cross = [_cross_path('capeformer', s) for s in CROSS_SPLITS]
    backbones = sorted((CAPE_DIR / 'backbones').glob('*.py'))  # tests/test_timm_backbones.py
    assert sorted(CAPE_DIR.rglob('*.py')) == sorted(OFFICIAL + UNIFIED + [CPU] + cross + backbones)


@pytest.mark.parametrize('path', OFFICIAL, ids=[p.stem for p in OFFICIAL])
def test_official_recipe(path):
    split, shots = _split_shots(path)
    cfg = Config.fromfile(str(path))
    model = cfg.model
    assert model.type == 'CapeFormer' and model.max_kpt_num == 100
    assert model.backbone == dict(type='TorchvisionResNet', depth=50, out_indices=(3, ),
                                  pretrained='torchvision://resnet50')
    assert model.embed_dims == 256 and model.order_embedding == 'fixed'
    for part in ('encoder_cfg', 'decoder_cfg'):
        assert model[part] == dict(num_layers=3, num_heads=8, ffn_dims=2048, dropout=0.1)
    assert model.proposal_cfg == dict(dynamic_dims=128, window=3)
    assert model.criterion == dict(type='CapeFormerCriterion', heatmap_weight=2.0,
                                   proposal_weight=1.0, layer_weight=1.0)
    assert model.similarity_aid is None

    # Adam 1e-5, no decay, no clipping; warmup 1000 iterations from 0.001 x lr; x0.1 at 160/180
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'clip_grad' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=1e-5, weight_decay=0.0)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.by_epoch, warmup.begin, warmup.end) == (
        'LinearLR', 0.001, False, 0, 1000)
    assert (steps.type, steps.milestones, steps.gamma, steps.by_epoch) == (
        'MultiStepLR', [160, 180], 0.1, True)
    assert cfg.train_cfg.max_epochs == 200 and cfg.train_cfg.val_interval == 50
    assert cfg.total_batch_size == 16 and cfg.train_dataloader.batch_size == 16
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.randomness.seed == 1

    aug = _steps(cfg.train_dataloader.dataset.pipeline, 'RandomScaleRotation')
    assert aug == [dict(type='RandomScaleRotation', scale_factor=0.15, rot_factor=15,
                        rot_prob=0.6)]
    for loader in LOADERS:
        ds = cfg[loader].dataset
        # the official per-split file of this split and role, every category in file order
        assert ds.ann_file == f'annotations/mp100_split{split}_{ROLES[loader]}.json', loader
        assert ds.split is None and ds.subset is None and ds.get('valid_class_ids') is None
        assert ds.data_root == 'data/mp100' and ds.data_prefix == dict(img='mp100_images_cc')
        assert ds.num_shots == shots and ds.max_kpt_num == 100
        assert ds.episode_pipeline == [dict(type='KeypointPadding', padding='zero', num=100)]
        target = _steps(ds.pipeline, 'GenerateCAPETarget')
        assert target == [dict(type='GenerateCAPETarget', heatmap_size=(64, 64), sigma=2,
                               with_heatmap=True)], loader
        assert _steps(ds.pipeline, 'TopdownAffine')[0].input_size == (256, 256)
        if loader != 'train_dataloader':
            assert not _steps(ds.pipeline, 'RandomScaleRotation')
            assert ds.num_queries == 15 and cfg[loader].batch_size == 1
    assert cfg.val_dataloader.dataset.num_episodes == 100
    assert cfg.test_dataloader.dataset.num_episodes == 200
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.type == 'CAPEMetric' and evaluator.thresholds == THRESHOLDS


@pytest.mark.parametrize('path', UNIFIED, ids=[p.stem for p in UNIFIED])
def test_unified_variant_differs_only_in_the_category_source(path):
    split, _ = _split_shots(path)
    cfg = Config.fromfile(str(path))
    official = Config.fromfile(str(path.with_name(path.name.replace('_unified', ''))))
    for key in ('model', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'randomness',
                'test_evaluator', 'total_batch_size', 'default_hooks'):
        assert cfg[key] == official[key], key
    for loader in LOADERS:
        ds, ref = cfg[loader].dataset, official[loader].dataset
        assert ds.ann_file == 'annotations/unified_ann_file.json'
        assert (ds.split, ds.subset) == (split, ROLES[loader])
        rest = {k: v for k, v in ds.items() if k not in ('ann_file', 'split', 'subset')}
        assert rest == {k: v for k, v in ref.items() if k not in ('ann_file', 'split', 'subset')}


def test_cpu_config_is_a_budget_variant():
    cfg = Config.fromfile(str(CPU))
    model = cfg.model
    assert model.type == 'CapeFormer' and model.max_kpt_num == 100
    assert model.backbone.depth == 18 and model.backbone.pretrained is None
    assert model.similarity_aid is None
    train = cfg.train_dataloader
    for loader in LOADERS:
        ds = cfg[loader].dataset
        assert ds.data_root == 'data/synthetic_mp100_real'
        assert ds.ann_file == 'annotations/unified_ann_file.json'
        assert (ds.split, ds.subset, ds.split_file) == (1, ROLES[loader], 'splits.json')
        assert ds.num_shots == 1 and ds.max_kpt_num == 100
        assert _steps(ds.pipeline, 'GenerateCAPETarget')[0].with_heatmap
        assert ds.episode_pipeline[0].num == 100
    # the learning-check budget (docs/capeformer.md): 70 categories x 16 episodes / 8 x 6 epochs
    iterations = 70 * train.sampler.episodes_per_category // train.batch_size * \
        cfg.train_cfg.max_epochs
    assert train.batch_size == cfg.total_batch_size == 8 and iterations == 840


# ------------------------------------------------------------------ cross-super-category splits
def test_cross_category_lists_are_consistent():
    table = _cross_table()
    assert tuple(table) == CROSS_SPLITS
    tests = [set(entry.test_ids) for entry in table.values()]
    assert sum(len(t) for t in tests) == len(set().union(*tests))  # pairwise disjoint
    for name, entry in table.items():
        test, train = entry.test_ids, entry.train_ids
        assert test and len(set(test)) == len(test) and len(set(train)) == len(train), name
        assert all(1 <= i <= 100 for i in test + train), name
        assert not set(test) & set(train), name
        assert sorted(test + train) == list(range(1, 101)), name  # train = all the others
        assert len(entry.test_names) == len(test)
        assert (entry.num_shots, entry.num_queries, entry.val_episodes) == (1, 15, 200)
    assert [table[n].test_episodes for n in CROSS_SPLITS] == [200, 200, 100, 100]


@pytest.mark.parametrize('model', sorted(CROSS_MODELS))
@pytest.mark.parametrize('split', CROSS_SPLITS)
def test_cross_config_reads_the_lists(model, split):
    entry = _cross_table()[split]
    cfg = Config.fromfile(str(_cross_path(model, split)))
    ref = Config.fromfile(str(CROSS_MODELS[model][1]))
    for key in ('model', 'optim_wrapper', 'param_scheduler', 'randomness', 'total_batch_size'):
        assert cfg[key] == ref[key], key
    assert cfg.train_cfg.max_epochs == ref.train_cfg.max_epochs
    for loader in LOADERS:
        ds = cfg[loader].dataset
        assert ds.ann_file == ref[loader].dataset.ann_file
        assert ds.split is None and ds.subset is None and ds.num_shots == 1
        ids = entry.train_ids if loader == 'train_dataloader' else entry.test_ids
        assert list(ds.valid_class_ids) == list(ids), loader
    for loader, episodes in (('val_dataloader', entry.val_episodes),
                             ('test_dataloader', entry.test_episodes)):
        ds = cfg[loader].dataset
        assert (ds.num_queries, ds.num_episodes) == (15, episodes), loader


def _real_categories():
    """id -> dict(name, supercategory, kpts, folders, count) over the real val / test files."""
    cats = {}
    for path in sorted(MP100_ANN_DIR.glob('mp100_split*_*.json')):
        data = json.loads(path.read_text(encoding='utf-8'))
        folder = {img['id']: img['file_name'].split('/')[0] for img in data['images']}
        for cat in data['categories']:
            cats.setdefault(cat['id'], dict(name=cat['name'],
                                            supercategory=cat.get('supercategory'), kpts=0,
                                            folders=set(), count=0))
        for ann in data['annotations']:
            entry = cats[ann['category_id']]
            entry['kpts'] = len(ann['keypoints']) // 3
            entry['folders'].add(folder[ann['image_id']])
            entry['count'] += 1
    return cats


@skip_without(MP100_ANN_DIR)
def test_cross_lists_match_the_real_category_records():
    """The derivation rules of docs/cross_category.md, applied to the real category records."""
    cats = _real_categories()
    assert sorted(cats) == list(range(1, 101))
    table = _cross_table()
    for name, entry in table.items():
        assert [cats[i]['name'] for i in entry.test_ids] == list(entry.test_names), name

    def ids(rule):
        return sorted(i for i, c in cats.items() if rule(c))

    assert table.human_body.test_ids == ids(lambda c: c['name'] == 'person')
    assert table.human_face.test_ids == ids(lambda c: c['name'] == 'face')
    assert table.vehicle.test_ids == ids(lambda c: c['supercategory'] == 'vehicle')
    assert table.furniture.test_ids == ids(lambda c: c['supercategory'] == 'furniture')
    # the files' 'person' supercategory is human body + human face (the hand has its own)
    assert ids(lambda c: c['supercategory'] == 'person') == sorted(
        table.human_body.test_ids + table.human_face.test_ids)
    assert ids(lambda c: c['supercategory'] == 'hand') == [80]


@skip_without(MP100_ANN_DIR)
def test_cross_test_categories_have_their_sources_and_enough_instances():
    cats = _real_categories()
    table = _cross_table()
    # source folders: COCO person, 300W face, AFLW face (stored under amur_tiger_body),
    # CarFusion and Keypoint-5 folders named after the category
    expected = {72: ('human_body', 17), 40: ('human_face', 68), 18: ('amur_tiger_body', 19)}
    for name in ('vehicle', 'furniture'):
        for i in table[name].test_ids:
            expected[i] = (cats[i]['name'], cats[i]['kpts'])
    for i, (folder, kpts) in expected.items():
        assert cats[i]['folders'] == {folder} and cats[i]['kpts'] == kpts, i
    for entry in table.values():
        for i in entry.test_ids:  # one episode = 1 support + 15 distinct queries
            assert cats[i]['count'] >= entry.num_shots + entry.num_queries, i


# -------------------------------------------------------------------------- scripts.sh entries
def test_scripts_name_existing_configs():
    env = dict(os.environ, PYTHON='echo')

    def printed(*args):
        out = subprocess.run(['bash', 'scripts.sh', *args], cwd=REPO, env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        return out[1]

    assert printed('capeformer-train', '3', '5') == str(OFFICIAL[5].relative_to(REPO))
    assert printed('capeformer-unified-test', '2', '1', 'x.pth') == str(
        UNIFIED[2].relative_to(REPO))
    for model in CROSS_MODELS:
        for split in CROSS_SPLITS:
            path = printed(f'{model}-cross-test', split.replace('_', '-'), 'x.pth')
            assert path == str(_cross_path(model, split).relative_to(REPO))
    bad = subprocess.run(['bash', 'scripts.sh', 'fmmp-cross-test', 'animal', 'x.pth'], cwd=REPO,
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and 'human-body' in bad.stderr


# ---------------------------------------------------------------------------- the model runs
INPUT = 64


@pytest.fixture(scope='module')
def tiny_synthetic(tmp_path_factory):
    from metapoint.datasets.synthetic import generate_dataset
    root = tmp_path_factory.mktemp('capeformer_synthetic')
    generate_dataset(root, source='random', img_size=INPUT, num_categories=3,
                     instances_per_category=6, calib_pairs=10)
    return root


def _small(ds_cfg, root, **overrides):
    """The config's dataset on the tiny set: every category of its unified file, 64 px."""
    ds = copy.deepcopy(ds_cfg)
    ds.update(data_root=str(root), ann_file='annotations/unified_ann_file.json',
              data_prefix=dict(img='images'), split=None, subset=None, **overrides)
    for step in ds['pipeline']:
        if step['type'] == 'TopdownAffine':
            step['input_size'] = (INPUT, INPUT)
        if step['type'] == 'GenerateCAPETarget':
            step['heatmap_size'] = (INPUT // 4, INPUT // 4)
    return DATASETS.build(ds)


@pytest.mark.parametrize('shots', [1, 5])
def test_model_trains_and_predicts(shots, tiny_synthetic):
    register_all_modules()
    cfg = Config.fromfile(str(CAPE_DIR / f'capeformer_r50_1xb16_mp100-split1_{shots}shot.py'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg['backbone'] = dict(type='TorchvisionResNet', depth=18, out_indices=(3, ),
                                 pretrained=None)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)

    train = _small(cfg.train_dataloader.dataset, tiny_synthetic)
    data = model.data_preprocessor(episode_collate([train[0], train[1]]), True)
    assert data['inputs'].support_heatmaps is not None
    assert data['inputs'].query_heatmaps is not None
    model.train()
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k)
    assert losses and torch.isfinite(total), losses
    total.backward()

    queries = 6 - shots  # 6 instances per category
    test = _small(cfg.test_dataloader.dataset, tiny_synthetic, num_episodes=1,
                  num_queries=queries)
    data = model.data_preprocessor(episode_collate([test[0]]), False)
    model.eval()
    with torch.no_grad():
        points = model(**data, mode='tensor')
    assert points.shape == (1, queries, 100, 2)
    assert ((points >= 0) & (points <= 1)).all()
