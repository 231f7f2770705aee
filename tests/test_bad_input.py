"""Bad input: each gets a clear error naming the file and the annotation / category id, or a
logged, counted skip. Every case starts from the valid tiny set of ``tests/helpers.py`` (two
categories: 1 with annotations 101-104, K=4; 2 with annotations 201-203, K=5; one 64x48 image per
annotation) and changes one thing.
"""
import json
import re

import numpy as np
import pytest

from tests.helpers import TINY_BOX, TINY_IMG_W

from metapoint.datasets import (AnnotationError, EpisodeError, ImageLoadError,
                                MP100Dataset, draw_train_episodes)
from metapoint.datasets.annotation_parsing import UndecidableSkeletonBaseError

ZERO_BOX = 'zero-area bbox after clipping'


def esc(path):
    return re.escape(str(path))


def build(tc, **kw):
    return MP100Dataset(**tc.dataset_kwargs(**kw))


def ann_ids(packed_episode):
    return [i['meta']['ann_id'] for i in packed_episode['supports'] + packed_episode['queries']]


def warnings_of(records):
    return [r.getMessage() for r in records if r.levelname == 'WARNING']


# ------------------------------------------------------------------------- the valid baseline
def test_tiny_set_is_valid(tiny_coco):
    tc = tiny_coco()
    ds = build(tc)
    assert list(ds.categories) == [1, 2]
    assert [c.num_kpts for c in ds.categories.values()] == [4, 5]
    assert [i['ann_id'] for i in ds.instances] == [101, 102, 103, 104, 201, 202, 203]
    assert ds.report.num_skipped == 0 and ds.report.skeleton_base == {'0': [1, 2]}
    assert [(e.category_id, len(e.query_indices)) for e in ds.episodes] == \
        [(1, 2), (1, 2), (2, 2), (2, 2)]
    ep = ds[0]
    assert ep['supports'][0]['img'].shape == (3, 32, 32)
    assert set(ann_ids(ep)) <= {101, 102, 103, 104}
    train = build(tc, test_mode=False)
    assert len(train) == 2 * 4 and train.num_load_failures == 0


# ---------------------------------------------------------------------------- file structure
def test_malformed_json(tiny_coco):
    tc = tiny_coco()
    text = tc.ann_file.read_text()
    tc.ann_file.write_text(text[:len(text) // 2])  # truncated
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: malformed JSON'):
        build(tc)


@pytest.mark.parametrize('key', ['annotations', 'images', 'categories'])
def test_missing_top_level_field(tiny_coco, key):
    tc = tiny_coco(mutate=lambda d: d.pop(key))
    with pytest.raises(AnnotationError,
                       match=rf'^{esc(tc.ann_file)}: missing or non-list "{key}" field'):
        build(tc)


def test_top_level_not_an_object(tiny_coco):
    tc = tiny_coco()
    tc.ann_file.write_text('[1, 2, 3]')
    with pytest.raises(AnnotationError, match=rf'{esc(tc.ann_file)}: expected a JSON object'):
        build(tc)


def test_missing_annotation_file(tiny_coco):
    tc = tiny_coco()
    missing = tc.ann_file.parent / 'nope.json'
    with pytest.raises(FileNotFoundError, match=esc(missing)):
        build(tc, ann_file=str(missing))


# ------------------------------------------------------------------------------- images
def test_missing_image_test_mode(tiny_coco):
    tc = tiny_coco()
    tc.img_of_ann[103].unlink()
    with pytest.raises(ImageLoadError, match=rf'{esc(tc.ann_file)}: 1 image file\(s\) missing or '
                       rf'empty, first {esc(tc.img_of_ann[103])} \(missing; annotation 103\)'):
        build(tc)


def test_missing_image_training_is_skipped(tiny_coco, mm_logs):
    tc = tiny_coco()
    tc.img_of_ann[103].unlink()
    ds = build(tc, test_mode=False)
    assert ds.report.skipped == {'image file missing': [103]}
    assert [i['ann_id'] for i in ds.instances] == [101, 102, 104, 201, 202, 203]
    assert [len(v) for v in ds.cat_to_indices.values()] == [3, 3]
    warn = [m for m in warnings_of(mm_logs) if 'image is missing' in m]
    assert len(warn) == 1
    assert str(tc.img_of_ann[103]) in warn[0] and 'annotation 103' in warn[0]
    assert str(tc.ann_file) in warn[0]


def test_empty_image_file_is_an_error_in_test_mode(tiny_coco):
    """A 0-byte image fails the load-time check (the checker's rule), not only the later load."""
    tc = tiny_coco()
    tc.img_of_ann[202].write_bytes(b'')
    with pytest.raises(ImageLoadError, match=rf'{esc(tc.ann_file)}: 1 image file\(s\) missing or '
                       rf'empty, first {esc(tc.img_of_ann[202])} \(empty; annotation 202\)'):
        build(tc)


def test_missing_and_empty_images_training_are_skipped(tiny_coco, mm_logs):
    tc = tiny_coco()
    tc.img_of_ann[202].write_bytes(b'')
    tc.img_of_ann[103].unlink()
    ds = build(tc, test_mode=False)
    assert ds.report.skipped == {'image file missing': [103], 'image file empty': [202]}
    assert [i['ann_id'] for i in ds.instances] == [101, 102, 104, 201, 203]
    warn = [m for m in warnings_of(mm_logs) if 'missing or empty' in m]
    assert len(warn) == 1 and 'skipped 2 instance(s)' in warn[0]


def _corrupt(tc, ann_id):
    tc.img_of_ann[ann_id].write_bytes(b'this is not a PNG file' * 10)


def test_corrupt_image_test_mode(tiny_coco):
    tc = tiny_coco()
    _corrupt(tc, 102)
    ds = build(tc, valid_class_ids=[1], num_queries=3)  # every episode holds all 4 instances
    with pytest.raises(ImageLoadError, match=rf'^{esc(tc.ann_file)}: failed to load annotation '
                       rf'102 \(image {esc(tc.img_of_ann[102])}\)'):
        ds[0]


def test_corrupt_image_training_is_replaced(tiny_coco, mm_logs):
    tc = tiny_coco()
    _corrupt(tc, 102)
    ds = build(tc, test_mode=False)
    bad = next(i for i, inst in enumerate(ds.instances) if inst['ann_id'] == 102)
    episode = next(e for e in ds.episodes if bad in e.support_indices + e.query_indices)
    packed = ds[episode]
    assert ds.num_load_failures == 1
    ids = ann_ids(packed)
    assert len(ids) == 2 and len(set(ids)) == 2
    assert 102 not in ids and set(ids) <= {101, 103, 104}  # same category, another instance
    # the other member of the episode is kept
    kept = [ds.instances[i]['ann_id'] for i in episode.support_indices + episode.query_indices
            if i != bad]
    assert kept[0] in ids
    warn = [m for m in warnings_of(mm_logs) if 'unreadable training instance' in m]
    assert len(warn) == 1 and '(1 so far)' in warn[0] and 'annotation 102' in warn[0]
    assert str(tc.img_of_ann[102]) in warn[0]
    # over several epochs: every episode holding 102 gets another category-1 instance instead
    more = [e for epoch in range(1, 6) for e in draw_train_episodes(ds.cat_to_indices, 1, 1, epoch)
            if bad in e.support_indices + e.query_indices]
    assert len(more) >= 8
    for e in more:
        ids = ann_ids(ds[e])
        assert len(set(ids)) == 2 and set(ids) <= {101, 103, 104}
    assert ds.num_load_failures == 1 + len(more)


def test_corrupt_images_training_gives_up(tiny_coco):
    tc = tiny_coco()
    for ann_id in (101, 102, 103, 104):
        _corrupt(tc, ann_id)
    ds = build(tc, test_mode=False, max_refetch=3)
    episode = next(e for e in ds.episodes if e.category_id == 1)
    with pytest.raises(ImageLoadError, match=rf'{esc(tc.ann_file)}: 3 replacement attempts '
                       r'failed for an episode of category 1'):
        ds[episode]
    assert ds.num_load_failures == 4


# --------------------------------------------------------------------------- annotations
def test_keypoint_list_wrong_length(tiny_coco):
    tc = tiny_coco(mutate=lambda d: next(a for a in d['annotations'] if a['id'] == 202)
                   .update(keypoints=[1.0] * 12))
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: annotation 202 \(category '
                       r'2\): keypoint list has 12 values, expected 3\*K = 15'):
        build(tc)


def test_non_finite_keypoints(tiny_coco):
    def mutate(d):
        a = next(a for a in d['annotations'] if a['id'] == 104)
        a['keypoints'][3] = float('nan')  # json.dumps writes NaN, json.load reads it back

    tc = tiny_coco(mutate=mutate)
    with pytest.raises(AnnotationError,
                       match=rf'{esc(tc.ann_file)}: annotation 104: non-finite keypoint values'):
        build(tc)


@pytest.mark.parametrize('skeleton,base,message', [
    ([[0, 1], [4, 7]], 'auto',
     r'category 2: skeleton index out of range \(min 0, max 7\) for 5 keypoints'),
    ([[0, 1], [4, 5]], 0,
     r'category 2: skeleton index out of range for 5 keypoints with index base 0: \[\[4, 5\]\]'),
    ([[0, 1], [4, 5]], 'auto', r'category 2: cannot decide the skeleton index base'),
    ([[0, 1], [1, 6]], 1,
     r'category 2: skeleton index out of range for 5 keypoints with index base 1: \[\[0, 1\], '
     r'\[1, 6\]\]'),
    ([[0, 1, 2]], 'auto', r'category 2: skeleton entry \[0, 1, 2\] is not a pair of integers'),
])
def test_skeleton_index_out_of_range(tiny_coco, skeleton, base, message):
    tc = tiny_coco(mutate=lambda d: d['categories'][1].update(skeleton=skeleton))
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: {message}'):
        # (explicit bases apply to every category: load category 2 alone)
        build(tc, skeleton_index_base=base, valid_class_ids=[2], num_queries=1)


def test_undecidable_skeleton_base_has_its_own_error_class(tiny_coco):
    tc = tiny_coco(mutate=lambda d: d['categories'][1].update(skeleton=[[1, 2], [2, 3]]))
    with pytest.raises(UndecidableSkeletonBaseError, match=r'category 2: cannot decide'):
        build(tc)


NO_ZERO = [[1, 2], [2, 3]]  # 0-indexed links of category 1 (K=4) that never use keypoint 0


def _declare(base):
    def mutate(d):
        d['categories'][0]['skeleton'] = [list(p) for p in NO_ZERO]
        if base is not None:
            d['info']['skeleton_index_base'] = base
    return mutate


def test_auto_takes_the_files_declared_skeleton_base(tiny_coco, mm_logs):
    """'auto' reads a file's info.skeleton_index_base (as our tools write it), logged."""
    with pytest.raises(UndecidableSkeletonBaseError, match='category 1'):
        build(tiny_coco(mutate=_declare(None)))  # nothing declared: 'auto' cannot decide
    ds = build(tiny_coco(mutate=_declare(0)))
    assert ds.categories[1].skeleton == NO_ZERO
    assert ds.categories[2].skeleton == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]]
    assert ds.report.declared_skeleton_base == 0
    assert ds.report.skeleton_base == {'0': [1, 2]}
    logged = [r.getMessage() for r in mm_logs if 'categories,' in r.getMessage()]
    assert "base 0 for every category, from the file's info.skeleton_index_base" in logged[-1]
    # declared 1: every category is read 1-indexed (category 2 uses index 0: out of range)
    with pytest.raises(AnnotationError, match=r"category 2: skeleton index out of range for 5 "
                       r"keypoints with index base 1: .*\(index base from the file's "
                       r"info.skeleton_index_base\)"):
        build(tiny_coco(mutate=_declare(1)))
    ds = build(tiny_coco(mutate=_declare(1)), valid_class_ids=[1])
    assert ds.categories[1].skeleton == [[0, 1], [1, 2]]
    # an explicit setting wins over the declaration
    ds = build(tiny_coco(mutate=_declare(1)), skeleton_index_base=0)
    assert ds.categories[1].skeleton == NO_ZERO and ds.report.declared_skeleton_base is None
    tc = tiny_coco(mutate=_declare('zero'))
    with pytest.raises(AnnotationError, match=rf"^{esc(tc.ann_file)}: info.skeleton_index_base "
                       r"must be 0 or 1, got 'zero'"):
        build(tc)


def _extra_anns(d, boxes_and_areas):
    """Append copies of annotation 101 (same image) with ids 901.. and the given box / area."""
    src = next(a for a in d['annotations'] if a['id'] == 101)
    for i, (box, area) in enumerate(boxes_and_areas):
        d['annotations'].append(dict(src, id=901 + i, bbox=box, area=area))


def test_zero_area_boxes_are_counted_skips(tiny_coco, mm_logs):
    x, y, w, h = TINY_BOX
    tc = tiny_coco(mutate=lambda d: _extra_anns(d, [
        ([x, y, 0.0, h], 1.0),             # w = 0
        ([x, y, w, 0.0], 1.0),             # h = 0
        ([TINY_IMG_W + 5.0, y, w, h], w * h),  # right of the image
        ([x, 60.0, w, h], w * h),          # below the 48 px image
        ([x, y, w, h], 0),                 # area 0 (official: skipped)
        ([x, y, 0.5, h], 1.0),             # w < 1: w - 1 < 0, x2 = x1
    ]))
    ds = build(tc)
    assert ds.report.skipped == {ZERO_BOX: [901, 902, 903, 904, 906], 'zero area': [905]}
    assert ds.report.num_skipped == 6
    assert [i['ann_id'] for i in ds.instances] == [101, 102, 103, 104, 201, 202, 203]
    info = [r.getMessage() for r in mm_logs if str(tc.ann_file) in r.getMessage()]
    assert any('skipped 5 annotation(s) (zero-area bbox after clipping; first ids '
               '[901, 902, 903, 904, 906])' in m for m in info)


def test_box_left_of_image_follows_official_rule(tiny_coco):
    """The official rule clamps x1 = max(0, x) *before* adding the width, so a box wholly left of
    (or above) the image is kept as [0, y1, w-1, h'] (a box touching the left border). Documented
    here so a change of this parity-relevant behaviour is deliberate."""
    x, y, w, h = TINY_BOX
    tc = tiny_coco(mutate=lambda d: _extra_anns(d, [([-100.0, y, 50.0, h], 50.0 * h)]))
    ds = build(tc)
    inst = next(i for i in ds.instances if i['ann_id'] == 901)
    np.testing.assert_allclose(inst['bbox'][0], [0, y, 49, y + h - 1])
    assert ds.report.num_skipped == 0


@pytest.mark.parametrize('change,reason', [
    (dict(keypoints=[]), 'no keypoints'),
    (dict(keypoints=[0.0] * 12), 'no labelled keypoint'),
    (dict(num_keypoints=0), 'no labelled keypoint'),
    (dict(bbox=None), 'no bbox'),
])
def test_official_instance_skips(tiny_coco, change, reason):
    tc = tiny_coco(mutate=lambda d: next(a for a in d['annotations'] if a['id'] == 101)
                   .update(change))
    ds = build(tc)
    assert ds.report.skipped == {reason: [101]}
    assert 101 not in [i['ann_id'] for i in ds.instances] and len(ds.instances) == 6


def test_unknown_image_id(tiny_coco):
    tc = tiny_coco(mutate=lambda d: next(a for a in d['annotations'] if a['id'] == 203)
                   .update(image_id=999))
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: annotation 203 refers to '
                       r'unknown image id 999'):
        build(tc)


def test_duplicate_annotation_id(tiny_coco):
    tc = tiny_coco(mutate=lambda d: next(a for a in d['annotations'] if a['id'] == 202)
                   .update(id=201))
    with pytest.raises(AnnotationError,
                       match=rf'^{esc(tc.ann_file)}: duplicate annotation id 201'):
        build(tc)


def test_duplicate_category_id(tiny_coco):
    tc = tiny_coco(mutate=lambda d: d['categories'][1].update(id=1))
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: duplicate category id 1'):
        build(tc)


def test_image_without_size(tiny_coco):
    tc = tiny_coco(mutate=lambda d: d['images'][2].pop('width'))
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: image 3 has no "width"'):
        build(tc)


# ---------------------------------------------------------------------------- categories
def test_oversized_category(tiny_coco, mm_logs):
    tc = tiny_coco()
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: category 2 \(tiny_2\) has '
                       r'5 keypoints, more than max_kpt_num=4'):
        build(tc, max_kpt_num=4)
    ds = build(tc, max_kpt_num=4, skip_oversized_categories=True)
    assert list(ds.categories) == [1]
    assert ds.report.skipped_categories == {'more than max_kpt_num=4 keypoints': [2]}
    assert [i['ann_id'] for i in ds.instances] == [101, 102, 103, 104]
    assert all(i['keypoints'].shape == (1, 4, 2) for i in ds.instances)
    assert any('skipped 1 categor(y/ies) (more than max_kpt_num=4 keypoints: [2])'
               in r.getMessage() for r in mm_logs)


def test_valid_class_ids_absent(tiny_coco):
    tc = tiny_coco()
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: valid_class_ids \[7, 9\] '
                       r'are not categories of this file'):
        build(tc, valid_class_ids=[1, 7, 9])


def test_empty_name_list_takes_k_from_annotations(tiny_coco):
    def mutate(d):
        d['categories'][1]['keypoints'] = []
        # the first annotation of the category has no keypoints (a skip, not K = 0)
        next(a for a in d['annotations'] if a['id'] == 201).update(keypoints=[])

    tc = tiny_coco(mutate=mutate)
    ds = build(tc, num_queries=1)
    assert ds.categories[2].num_kpts == 5 and ds.categories[2].keypoint_names == []
    assert ds.report.skipped == {'no keypoints': [201]}

    # no annotation to take the count from
    tc2 = tiny_coco(mutate=lambda d: (d['categories'][1].update(keypoints=[]),
                                      d.update(annotations=[a for a in d['annotations']
                                                            if a['category_id'] != 2])))
    with pytest.raises(AnnotationError, match=rf'^{esc(tc2.ann_file)}: category 2: empty '
                       r'keypoint-name list and no annotation'):
        build(tc2)
    # an inconsistent annotation of such a category names the annotation
    tc3 = tiny_coco(mutate=lambda d: (
        d['categories'][1].update(keypoints=[]),
        next(a for a in d['annotations'] if a['id'] == 203).update(keypoints=[1.0] * 18)))
    with pytest.raises(AnnotationError, match=rf'^{esc(tc3.ann_file)}: annotation 203 \(category '
                       r'2\): keypoint list has 18 values, expected 3\*K = 15'):
        build(tc3)


# ------------------------------------------------------------------------------ episodes
def test_too_few_instances_test_mode(tiny_coco, mm_logs):
    tc = tiny_coco()
    with pytest.raises(EpisodeError, match=rf'^{esc(tc.ann_file)}: category 2 has 3 instance\(s\);'
                       r' an evaluation episode needs num_shots\+num_queries=4'):
        build(tc, num_queries=3)
    ds = build(tc, num_queries=3, insufficient_instances='reduce')
    assert [(e.category_id, len(e.query_indices)) for e in ds.episodes] == \
        [(1, 3), (1, 3), (2, 2), (2, 2)]
    assert 'category 2: 3 instances < 1+3; using 2 queries per episode' in warnings_of(mm_logs)


def test_too_few_instances_training(tiny_coco):
    tc = tiny_coco()
    with pytest.raises(EpisodeError, match=rf'^{esc(tc.ann_file)}: training episodes need '
                       r'num_shots\+1=4 instances per category; categories with fewer: \{2: 3\}'):
        build(tc, test_mode=False, num_shots=3)
    assert len(build(tc, test_mode=False, num_shots=2)) == 2 * 4


def test_no_usable_instance(tiny_coco):
    tc = tiny_coco(mutate=lambda d: [a.update(num_keypoints=0) for a in d['annotations']
                                     if a['category_id'] == 1])
    with pytest.raises(AnnotationError, match=rf'^{esc(tc.ann_file)}: no usable instance'):
        build(tc, valid_class_ids=[1])
    ds = build(tc, num_queries=1)  # category 1 is dropped (logged), category 2 remains
    assert list(ds.cat_to_indices) == [2] and ds.report.skipped == {
        'no labelled keypoint': [101, 102, 103, 104]}


def test_tiny_json_written_is_what_factory_returns(tiny_coco):
    tc = tiny_coco(mutate=lambda d: d['annotations'].pop())
    assert json.loads(tc.ann_file.read_text()) == tc.data
    assert len(tc.data['annotations']) == 6 and tc.ann(101)['bbox'] == TINY_BOX
