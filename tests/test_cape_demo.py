"""The demos (demo/episode_demo.py, demo/cape_demo.py) and the user-input API
(metapoint.apis.cape_inputs): end-to-end runs with random-weight checkpoints of MetaPoint, FMMP and
CapeFormer (ResNet-18, 128 px), exact pixel mapping with SupportCopy, and every bad-input error."""
import importlib.util
import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from metapoint.apis import (CapeInputError, check_supports, init_estimator, load_query_bboxes,
                            load_query_image, load_support_spec, predict_cape,
                            predictions_to_json, render_cape_overlay)
from tests.helpers import REPO, tiny_synthetic_set

CONFIGS = {
    'metapoint': 'configs/metapoint/metapoint_r18_1xb8_synthetic-random-split1_1shot_quickstart.py',
    'fmmp': 'configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py',
    'capeformer': 'configs/capeformer/capeformer_r18_1xb8_synthetic-real-split1_1shot_cpu.py',
}
SUPPORT_COPY = str(REPO / 'configs/support_copy/supportcopy_mp100-split1_1shot.py')


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f'_{name}_under_test',
                                                  REPO / 'demo' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def episode_demo():
    return _load_script('episode_demo')


@pytest.fixture(scope='module')
def cape_demo():
    return _load_script('cape_demo')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Model name -> a checkpoint of randomly initialised weights (no download)."""
    from metapoint.models.backbones import disable_backbone_pretrained
    from metapoint.registry import MODELS
    from metapoint.utils import register_all_modules
    register_all_modules()
    out = tmp_path_factory.mktemp('ckpt')
    paths = {}
    for name, rel in CONFIGS.items():
        cfg = Config.fromfile(str(REPO / rel))
        disable_backbone_pretrained(cfg.model)
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        paths[name] = str(out / f'{name}.pth')
        torch.save({'state_dict': model.state_dict()}, paths[name])
    return paths


@pytest.fixture(scope='module')
def synthetic_set(tmp_path_factory):
    """A tiny synthetic MP-100-style set (6 categories x 3 instances of 64 px; split 1 tests
    one category)."""
    return tiny_synthetic_set(tmp_path_factory.mktemp('syn') / 'set', workers=1)


@pytest.fixture(scope='module')
def support_copy():
    return init_estimator(SUPPORT_COPY)


def _write_image(path, h, w, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return img


def _write_json(path, data):
    path.write_text(json.dumps(data), encoding='utf-8')
    return path


@pytest.fixture
def user_files(tmp_path):
    """A support JSON (image beside it, 5 keypoints, one not annotated, names, skeleton, box)
    and two query images of other sizes."""
    _write_image(tmp_path / 'support.png', 96, 120, seed=1)
    spec = dict(image='support.png',
                keypoints=[[30, 20, 2], [90, 30, 1], [60, 70, 2], [40, 50, 1], [0, 0, 0]],
                names=['head', 'tail', 'paw', 'back', 'ear'],
                skeleton=[[0, 1], [1, 2], [2, 3]], bbox=[20, 10, 80, 70])
    support = _write_json(tmp_path / 'support.json', spec)
    q1, q2 = tmp_path / 'q1.jpg', tmp_path / 'q2.png'
    _write_image(q1, 80, 100, seed=2)
    _write_image(q2, 64, 72, seed=3)
    return dict(dir=tmp_path, support=support, spec=spec, queries=[q1, q2])


# ------------------------------------------------------------------------------ episode_demo
@pytest.mark.parametrize('name', list(CONFIGS))
def test_episode_demo_runs_a_learned_model(name, checkpoints, synthetic_set, episode_demo,
                                           tmp_path):
    out = tmp_path / 'sub' / 'episode.png'
    written = episode_demo.main([
        str(REPO / CONFIGS[name]), checkpoints[name], '--out', str(out), '--device', 'cpu',
        '--cfg-options', f'test_dataloader.dataset.data_root={synthetic_set}',
        'test_dataloader.dataset.num_queries=2', 'test_dataloader.dataset.num_episodes=1'])
    assert written == str(out)
    img = cv2.imread(str(out))
    # 1 support + 2 queries, each tile 256 px high and square (square crops)
    assert img is not None and img.shape == (256, 3 * 256, 3)
    assert img.std() > 5  # a picture, not a blank canvas


def test_episode_demo_rejects_bad_episode_index(support_copy, synthetic_set, episode_demo,
                                                tmp_path):
    ds = (f'test_dataloader.dataset.data_root={synthetic_set}',
          'test_dataloader.dataset.ann_file=annotations/unified_ann_file.json',
          'test_dataloader.dataset.data_prefix.img=images',
          'test_dataloader.dataset.split_file=splits.json',
          'test_dataloader.dataset.num_queries=2', 'test_dataloader.dataset.num_episodes=1')
    with pytest.raises(SystemExit, match='--episode 5: .* has 1 episodes'):
        episode_demo.main([SUPPORT_COPY, '--episode', '5', '--out', str(tmp_path / 'x.png'),
                           '--cfg-options', *ds])


# ------------------------------------------------------------------------------ cape_demo
@pytest.mark.parametrize('name', list(CONFIGS))
def test_cape_demo_end_to_end(name, checkpoints, user_files, cape_demo):
    out_dir = user_files['dir'] / 'out'
    q1, q2 = user_files['queries']
    argv = [str(REPO / CONFIGS[name]), checkpoints[name], '--support',
            str(user_files['support']), '--query', str(q1), str(q2), '--query-bbox',
            str(_write_json(user_files['dir'] / 'boxes.json', {'q1.jpg': [10, 5, 70, 60]})),
            '--out-dir', str(out_dir), '--height', '128']
    if name == 'metapoint':  # a second shot: the same support again, given as another file
        argv[2:2] = ['--support', str(_write_json(user_files['dir'] / 'shot2.json',
                                                   user_files['spec']))]
    record = cape_demo.main(argv)
    saved = json.loads((out_dir / 'predictions.json').read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved['num_keypoints'] == 5 and saved['names'] == user_files['spec']['names']
    assert saved['skeleton'] == user_files['spec']['skeleton']
    assert saved['annotated'] == [True, True, True, True, False]
    assert len(saved['supports']) == (2 if name == 'metapoint' else 1)
    assert [q['image'] for q in saved['queries']] == [str(q1), str(q2)]
    assert saved['queries'][0]['bbox'] == [10, 5, 70, 60]
    assert saved['queries'][1]['bbox'] == [0, 0, 72, 64]  # no box: the whole image
    for entry, size in zip(saved['queries'], [(100, 80), (72, 64)]):
        pts = np.array(entry['keypoints'])
        assert pts.shape == (5, 2) and np.isfinite(pts).all()
        assert entry['image_size'] == list(size)
        inside = (pts >= 0).all(1) & (pts <= size).all(1)
        assert entry['inside_image'] == inside.tolist()
        assert list(entry['named_keypoints']) == user_files['spec']['names']
        overlay = cv2.imread(entry['overlay'])
        # support crop tile + query tile, both resized to --height
        assert overlay is not None and overlay.shape[0] == 128 and overlay.shape[1] > 200


def test_cape_demo_command_line(user_files, tmp_path):
    """The script as a user runs it (its own process, from another folder)."""
    q1 = user_files['queries'][0]
    run = subprocess.run(
        [sys.executable, str(REPO / 'demo' / 'cape_demo.py'), SUPPORT_COPY, '--support',
         str(user_files['support']), '--query', str(q1), '--query-bbox', '10', '5', '70', '60',
         '--out-dir', 'result'], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert 'SupportCopy on cpu: 5 keypoints, 1 support(s), 1 query image(s)' in run.stdout
    assert (tmp_path / 'result' / 'q1_cape.png').is_file()
    saved = json.loads((tmp_path / 'result' / 'predictions.json').read_text())
    assert len(saved['queries'][0]['keypoints']) == 5


# ------------------------------------------------------------------------------ known predictions
def test_supportcopy_prediction_maps_back_to_query_pixels(support_copy, user_files):
    support = load_support_spec(user_files['support'])
    img = cv2.imread(str(user_files['dir'] / 'support.png'))
    annotated = support.visible > 0
    # same image, same box: the support keypoints come back
    same, = predict_cape(support_copy, [support], [img], [[20, 10, 80, 70]])
    np.testing.assert_allclose(same[annotated], support.keypoints[annotated], atol=1.0)
    # a half-size query whose box (17, 1, 40, 35) is the support box x 0.5, moved: the points
    # follow the box
    small = cv2.resize(img, (60, 48))
    moved, = predict_cape(support_copy, [support], [small], [[17, 1, 40, 35]])
    expected = (support.keypoints - [20, 10]) * 0.5 + [17, 1]
    np.testing.assert_allclose(moved[annotated], expected[annotated], atol=1.0)
    # no query box: the whole image; a support box of the whole image maps onto it
    whole = dict(user_files['spec'], image=str(user_files['dir'] / 'support.png'),
                 bbox=[0, 0, 120, 96])
    spec = load_support_spec(whole)
    big = cv2.resize(img, (240, 192))
    scaled, = predict_cape(support_copy, [spec], [big])
    np.testing.assert_allclose(scaled[annotated], 2 * spec.keypoints[annotated], atol=1.0)
    # the JSON record keeps the pixels and the names
    record = predictions_to_json([scaled], [spec], ['big'], [big.shape])
    assert record['queries'][0]['named_keypoints']['paw'] == pytest.approx([120, 140], abs=1.0)


def test_render_cape_overlay_draws_annotated_predictions(user_files):
    support = load_support_spec(user_files['support'])
    query = np.zeros((50, 100, 3), np.uint8)
    pred = np.array([[10, 10], [90, 10], [50, 40], [30, 25], [70, 40]], np.float32)
    canvas = render_cape_overlay([support], query, pred, height=100)
    assert canvas.shape[0] == 100
    q_tile = canvas[:, -200:]  # the query resized x2 is the last tile
    assert q_tile[20, 20].sum() > 0 and q_tile[50, 60].sum() > 0  # keypoints 0 and 3 drawn
    assert q_tile[80, 140].sum() == 0  # keypoint 4 is annotated in no support: not drawn


# ------------------------------------------------------------------------------ bad input
def _bad_support(user_files, **changes):
    spec = dict(user_files['spec'])
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return _write_json(user_files['dir'] / 'bad.json', spec)


BAD_SUPPORTS = {
    'missing image field': (dict(image=None), "'image'", 'missing'),
    'missing keypoints field': (dict(keypoints=None), "'keypoints'", 'missing'),
    'keypoint of 4 numbers': (dict(keypoints=[[1, 2, 1, 1]]), "'keypoints[0]'", r'\[x, y\]'),
    'keypoints not a list': (dict(keypoints={'x': 1}), "'keypoints'", 'list'),
    'non-number coordinate': (dict(keypoints=[[1, 2], ['3', 4]]), "'keypoints[1][0]'",
                              'number'),
    'keypoint outside the image': (dict(keypoints=[[1, 2], [5, 6], [121, 5]]),
                                   "'keypoints[2]'", 'outside the 120x96 image'),
    'negative visibility': (dict(keypoints=[[1, 2, -1]]), "'keypoints[0]'", 'visibility'),
    'nothing annotated': (dict(keypoints=[[1, 2, 0]], names=None, skeleton=None),
                          "'keypoints'", 'no keypoint is annotated'),
    'skeleton index out of range': (dict(skeleton=[[0, 1], [4, 5]]), "'skeleton[1]'",
                                    'index 5 out of range'),
    'skeleton of floats': (dict(skeleton=[[0.0, 1.0]]), "'skeleton[0]'", 'integer'),
    'names of the wrong length': (dict(names=['a']), "'names'", '1 names for 5 keypoints'),
    'bbox of 3 numbers': (dict(bbox=[1, 2, 3]), "'bbox'", 'expected 4 numbers'),
    'bbox of zero width': (dict(bbox=[1, 2, 0, 30]), "'bbox'", 'width and height'),
    'bbox outside the image': (dict(bbox=[500, 10, 30, 30]), "'bbox'", 'does not overlap'),
    'bbox not numbers': (dict(bbox='0 0 10 10'), "'bbox'", 'list of numbers'),
    'one keypoint and no bbox': (dict(keypoints=[[5, 5]], names=None, skeleton=None,
                                      bbox=None), "'bbox'", 'give a "bbox"'),
    'image file missing': (dict(image='nowhere.png'), "'image'", 'not found'),
    'image path not a string': (dict(image=3), "'image'", 'path string'),
    'unknown field': (dict(keypoint=[[1, 2]]), "'keypoint'", 'unknown field'),
}


@pytest.mark.parametrize('case', list(BAD_SUPPORTS))
def test_bad_support_json_names_file_and_field(case, user_files):
    changes, field, problem = BAD_SUPPORTS[case]
    path = _bad_support(user_files, **changes)
    with pytest.raises(CapeInputError,
                       match=f'bad.json: field {re.escape(field)}: .*{problem}') as info:
        load_support_spec(path)
    assert info.value.source == str(path)
    assert isinstance(info.value, ValueError)


def test_bad_support_files(user_files):
    d = user_files['dir']
    (d / 'broken.json').write_text('{"image": "support.png", "keypoints": [[1, 2]', 'utf-8')
    with pytest.raises(CapeInputError, match="broken.json: field '\\(file\\)': not valid JSON"):
        load_support_spec(d / 'broken.json')
    _write_json(d / 'list.json', [1, 2])
    with pytest.raises(CapeInputError, match="list.json: field '\\(top level\\)'"):
        load_support_spec(d / 'list.json')
    with pytest.raises(CapeInputError, match="absent.json: field '\\(file\\)': .*not found"):
        load_support_spec(d / 'absent.json')
    (d / 'fake.png').write_bytes(b'not an image at all')
    with pytest.raises(CapeInputError, match="bad.json: field 'image': not a readable image.*"
                                             "fake.png"):
        load_support_spec(_bad_support(user_files, image='fake.png'))
    (d / 'empty.png').write_bytes(b'')
    with pytest.raises(CapeInputError, match="empty.png: field 'image'"):
        load_query_image(d / 'empty.png')
    with pytest.raises(CapeInputError, match="<array>: field 'image': .*uint8"):
        load_query_image(np.zeros((4, 4, 3), np.float32))


def test_image_path_relative_to_the_json_file(user_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # not the JSON's folder
    spec = load_support_spec(user_files['support'])
    assert spec.image_path == str(user_files['dir'] / 'support.png')
    assert spec.image.shape == (96, 120, 3) and spec.num_kpts == 5
    np.testing.assert_array_equal(spec.visible, [1, 1, 1, 1, 0])
    # mixed [x, y] / [x, y, v] rows: [x, y] is annotated
    mixed = load_support_spec(dict(image=spec.image, keypoints=[[3, 4], [5, 6, 0], [9, 9, 2]]))
    np.testing.assert_array_equal(mixed.visible, [1, 0, 1])
    assert mixed.image_path is None and mixed.source == '<dict>'


def test_shots_must_agree_and_fit_the_model(user_files, support_copy):
    d = user_files['dir']
    first = load_support_spec(user_files['support'])
    fewer = load_support_spec(_write_json(d / 'fewer.json', dict(
        image='support.png', keypoints=[[30, 20], [90, 30], [60, 70]])))
    with pytest.raises(CapeInputError, match="fewer.json: field 'keypoints': 3 keypoints, but "
                                             ".*support.json has 5"):
        check_supports([first, fewer])
    renamed = load_support_spec(_write_json(d / 'renamed.json', dict(
        user_files['spec'], names=['a', 'b', 'c', 'd', 'e'])))
    with pytest.raises(CapeInputError, match="renamed.json: field 'names'"):
        check_supports([first, renamed])
    relinked = load_support_spec(_write_json(d / 'relinked.json', dict(
        user_files['spec'], skeleton=[[0, 4]])))
    with pytest.raises(CapeInputError, match="relinked.json: field 'skeleton'"):
        check_supports([first, relinked])
    with pytest.raises(CapeInputError, match='at least one support'):
        check_supports([])
    many = load_support_spec(_write_json(d / 'many.json', dict(
        image='support.png', keypoints=[[1 + i, 1 + i % 90] for i in range(71)])))
    with pytest.raises(CapeInputError, match="many.json: field 'keypoints': 71 keypoints, but "
                                             "the model takes at most max_kpt_num=70"):
        predict_cape(support_copy, [many], [first.image])


def test_bad_query_boxes(user_files, cape_demo, tmp_path):
    queries = [str(q) for q in user_files['queries']]
    assert load_query_bboxes(None, queries) == [None, None]
    boxes = load_query_bboxes([1, 2, 30, 40, 5, 6, 20, 20], queries)
    np.testing.assert_array_equal(boxes[1], [5, 6, 20, 20])
    with pytest.raises(CapeInputError, match="--query-bbox: field 'bbox': 4 numbers for 2 "
                                             "queries"):
        load_query_bboxes([1, 2, 30, 40], queries)
    path = _write_json(tmp_path / 'qb.json', [[1, 2, 30, 40], [1, 2, -3, 4]])
    with pytest.raises(CapeInputError, match=r"qb.json: field 'bbox\[1\] \(.*q2.png\)': "
                                             'width and height'):
        load_query_bboxes(str(path), queries)
    path = _write_json(tmp_path / 'qb.json', {'other.jpg': [1, 2, 30, 40]})
    with pytest.raises(CapeInputError, match="qb.json: field 'other.jpg': not one of the query"):
        load_query_bboxes(str(path), queries)
    # a box outside its query image is caught against the image
    with pytest.raises(CapeInputError, match="q1.jpg: field 'bbox': .*does not overlap the "
                                             "100x80 image"):
        predict_cape(_fake_model(), [load_support_spec(user_files['support'])],
                     [queries[0]], [[200, 200, 10, 10]])
    # through the command line: a SystemExit naming the option, before any model is built
    with pytest.raises(SystemExit, match="cape_demo: error: --query-bbox: field 'bbox': 'x' is "
                                         'not a number'):
        cape_demo.main([SUPPORT_COPY, '--support', str(user_files['support']), '--query',
                        *queries, '--query-bbox', '1', 'x', '3', '4'])
    with pytest.raises(SystemExit, match="cape_demo: error: .*bad.json: field 'skeleton\\[0\\]'"):
        cape_demo.main([SUPPORT_COPY, '--support',
                        str(_bad_support(user_files, skeleton=[[0, 9]])), '--query', *queries])


def _fake_model():
    """Enough of a model for the checks that run before inference."""
    model = torch.nn.Identity()
    model.max_kpt_num = 70
    return model
