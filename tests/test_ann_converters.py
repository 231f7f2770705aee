"""The annotation-file tools on the real MP-100 files: (a) the unified file from the per-split
files with the official split check, (b) skeleton links from another release, and the
missing-file error of the loader / FMMP configs.

The shared files are the val and test files of the five splits (no train files), with 0-indexed
skeletons for all 100 categories; the five test files together hold every category, so a unified
file built from these ten covers every official split list.
"""
import copy
import importlib.util
import json
import re

import pytest
from mmengine.config import Config

from tests.helpers import MP100_ANN_DIR, MP100_MINI, REPO, require

from metapoint.datasets import MP100_SPLITS, AnnotationError, MP100Dataset
from metapoint.datasets.ann_file_tools import (SourceCategory, SourceSkeletons,
                                               SplitMismatchError, add_skeletons,
                                               build_unified_file, read_source_skeletons)
from metapoint.datasets.mp100_splits import per_split_file_name

VAL_TEST = [(n, s) for n in range(1, 6) for s in ('val', 'test')]
TRAIN_NAMES = [f'mp100_split{n}_train.json' for n in range(1, 6)]
LINKED = 'annotations/mp100_all_link_0412.json'


def _load(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _tool(name):
    """Import tools/dataset_converters/<name>.py as a module (its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(
        name, REPO / 'tools' / 'dataset_converters' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def split_files():
    """(split, subset) -> the parsed shared per-split file."""
    require(MP100_ANN_DIR)
    return {k: _load(MP100_ANN_DIR / per_split_file_name(*k)) for k in VAL_TEST}


@pytest.fixture(scope='module')
def unified():
    require(MP100_ANN_DIR)
    return build_unified_file(str(MP100_ANN_DIR), allow_missing=True)


@pytest.fixture(scope='module')
def sources():
    require(MP100_ANN_DIR)
    return read_source_skeletons([str(MP100_ANN_DIR)])


def _split_dir(tmp_path, split_files, keep=VAL_TEST, edit=None):
    """A folder with the shared val/test files in ``keep``; ``edit[(n, s)](data)`` changes one."""
    d = tmp_path / 'ann'
    d.mkdir()
    for key in keep:
        target = d / per_split_file_name(*key)
        if edit and key in edit:
            data = copy.deepcopy(split_files[key])
            edit[key](data)
            target.write_text(json.dumps(data), encoding='utf-8')
        else:
            target.symlink_to(MP100_ANN_DIR / per_split_file_name(*key))
    return d


# ----------------------------------------------------------------------- (a) the unified file
def test_unified_file_from_the_val_and_test_files(unified, split_files):
    data, report = unified
    assert report.present == [per_split_file_name(*k) for k in VAL_TEST]
    assert report.missing == TRAIN_NAMES
    assert [c['id'] for c in data['categories']] == list(range(1, 101))
    # every annotation of every file, once, identical; first-appearance order over the files
    order, seen = [], set()
    for key in VAL_TEST:
        for a in split_files[key]['annotations']:
            if a['id'] not in seen:
                seen.add(a['id'])
                order.append(a['id'])
    assert [a['id'] for a in data['annotations']] == order
    assert len(order) == report.num_annotations == 14175  # measured: 20000 with repeats
    assert report.shared_annotations == 20000 - 14175
    by_id = {a['id']: a for a in data['annotations']}
    assert all(by_id[a['id']] == a for f in split_files.values() for a in f['annotations'])
    images = {i['id'] for i in data['images']}
    assert len(images) == len(data['images']) == report.num_images
    assert images == {i['id'] for f in split_files.values() for i in f['images']}
    assert 'split check' in report.summary() and 'mp100_split3_train.json' in report.summary()


def test_unified_file_loads_with_the_official_split_lists(unified, tmp_path):
    data, _ = unified
    path = tmp_path / 'unified_ann_file.json'
    path.write_text(json.dumps(data), encoding='utf-8')
    for subset in ('train', 'test'):
        ds = MP100Dataset(str(path), split=2, subset=subset, test_mode=True, check_images=False,
                          num_episodes=1)
        assert list(ds.categories) == MP100_SPLITS[2][subset]
        assert ds.report.skeleton_base == {'0': MP100_SPLITS[2][subset]}


def test_missing_split_files_are_an_error_unless_allowed():
    require(MP100_ANN_DIR)
    with pytest.raises(FileNotFoundError,
                       match=r'5 per-split file\(s\) not found: mp100_split1_train.json, '
                             r'.*mp100_split5_train.json\. Pass .*--allow-missing'):
        build_unified_file(str(MP100_ANN_DIR))


def test_split_check_names_file_split_subset_and_ids(tmp_path, split_files):
    def drop_10(d):  # category 10 (a split-1 test category) and its annotations
        d['categories'] = [c for c in d['categories'] if c['id'] != 10]
        d['annotations'] = [a for a in d['annotations'] if a['category_id'] != 10]

    d = _split_dir(tmp_path, split_files, edit={(1, 'test'): drop_10})
    with pytest.raises(SplitMismatchError,
                       match=r"mp100_split1_test.json: categories differ from the official split "
                             r"1 'test' list: missing \[10\], not in the list \[\]"):
        build_unified_file(str(d), allow_missing=True)


def test_split_check_refuses_a_foreign_category(tmp_path, split_files):
    cat_48 = next(c for c in split_files[(1, 'val')]['categories'] if c['id'] == 48)

    def add_48(d):  # 48 is a split-1 val category
        d['categories'].append(cat_48)

    d = _split_dir(tmp_path, split_files, edit={(1, 'test'): add_48})
    with pytest.raises(SplitMismatchError, match=r"mp100_split1_test.json: .* split 1 'test' "
                                                 r"list: missing \[\], not in the list \[48\]"):
        build_unified_file(str(d), allow_missing=True)


def test_result_must_cover_every_split_list(tmp_path, split_files):
    vals = [(n, 'val') for n in range(1, 6)]
    d = _split_dir(tmp_path, split_files, keep=vals)
    have = {i for n in range(1, 6) for i in MP100_SPLITS[n]['val']}
    absent = sorted(set(MP100_SPLITS[1]['test']) - have)
    assert absent  # some split-1 test categories are in no val list
    with pytest.raises(SplitMismatchError, match=re.escape(f'split 1 test: {absent}')):
        build_unified_file(str(d), allow_missing=True)


def test_an_id_must_be_identical_in_every_file(tmp_path, split_files):
    in_both = ({a['id'] for a in split_files[(1, 'val')]['annotations']}
               & {a['id'] for a in split_files[(2, 'test')]['annotations']})
    ann_id = min(in_both)

    def shift(d):
        a = next(a for a in d['annotations'] if a['id'] == ann_id)
        a['keypoints'][0] += 1.0

    d = _split_dir(tmp_path, split_files, edit={(2, 'test'): shift})
    with pytest.raises(AnnotationError,
                       match=rf"annotation id {ann_id} differs between mp100_split1_val.json and "
                             r"mp100_split2_test.json \(fields \['keypoints'\]\)"):
        build_unified_file(str(d), allow_missing=True)


# ------------------------------------------------------------------------ (b) skeleton links
STRIPPED = [10, 18, 40, 48]  # 18 and 40 are the two 'face' categories without keypoint names
ONE_INDEXED = [2, 33]
EDITED = 5  # its target links lack the source's last link


def _target(unified_data, sources):
    """The unified file with some skeletons emptied, some 1-indexed, one edited, one extra."""
    data = copy.deepcopy(unified_data)
    for cat in data['categories']:
        src = sources.categories[cat['id']].links
        if cat['id'] in STRIPPED:
            cat['skeleton'] = []
        elif cat['id'] in ONE_INDEXED:
            cat['skeleton'] = [[a + 1, b + 1] for a, b in src]
        elif cat['id'] == EDITED:
            cat['skeleton'] = [list(p) for p in src[:-1]]
    data['categories'].append(dict(id=101, name='extra', keypoints=['a', 'b', 'c'],
                                   skeleton=[[1, 2], [2, 3]]))  # 1-indexed, in no source
    return data


def test_only_empty_adds_links_and_writes_zero_indexed(unified, sources):
    target = _target(unified[0], sources)
    before = copy.deepcopy(target)
    out, report = add_skeletons(target, 'target.json', sources, mode='only-empty')
    assert target == before  # the input is not modified
    src = {cid: s.links for cid, s in sources.categories.items()}
    skel = {c['id']: c['skeleton'] for c in out['categories']}
    assert report.ids('added') == STRIPPED
    assert report.ids('converted') == ONE_INDEXED + [101]
    assert report.ids('replaced') == [] and report.ids('empty') == []
    assert report.ids('unchanged') == [i for i in range(1, 101)
                                       if i not in STRIPPED + ONE_INDEXED]
    assert report.not_in_source == [101]
    assert all(skel[i] == src[i] for i in range(1, 101) if i != EDITED)
    assert skel[EDITED] == src[EDITED][:-1]  # links it had are kept
    assert skel[101] == [[0, 1], [1, 2]]
    change = {c.id: c for c in report.changes}
    assert change[18].num_kpts == 19 and change[40].num_kpts == 68  # from the annotations
    assert change[2].base_before == 1 and change[2].links_before == src[2]
    assert out['info']['skeleton_index_base'] == 0
    assert out['info']['skeleton_links']['sources'] == sorted(
        per_split_file_name(*k) for k in VAL_TEST)
    summary = report.summary()
    assert ('added 4, replaced 0, converted 3, unchanged 94, empty 0 (of 101 categories)'
            in summary)
    assert 'not in the source files (links kept): [101]' in summary


def test_replace_takes_every_link_from_the_source(unified, sources):
    out, report = add_skeletons(_target(unified[0], sources), 'target.json', sources,
                                mode='replace')
    assert report.ids('replaced') == [EDITED]
    assert report.ids('added') == STRIPPED
    assert report.ids('converted') == ONE_INDEXED + [101]
    skel = {c['id']: c['skeleton'] for c in out['categories']}
    assert all(skel[i] == s.links for i, s in sources.categories.items())


def test_keypoint_count_mismatch_is_refused(unified, sources):
    target = copy.deepcopy(unified[0])
    cat = next(c for c in target['categories'] if c['id'] == 48)
    cat['keypoints'] = cat['keypoints'] + ['extra']
    with pytest.raises(AnnotationError,
                       match=r"target.json: refusing to copy skeletons, .*category 48 "
                             r"\('goldenretriever_face'\): K=10 in the target, K=9 in "
                             r".*mp100_split1_val.json"):
        add_skeletons(target, 'target.json', sources)


def test_another_release_is_refused(sources):
    """mp100_mini numbers its own 37 categories: category 1 is coco_person, not MP-100's skirt."""
    mini = _load(require(MP100_MINI / 'annotations' / 'mp100_mini.json'))
    with pytest.raises(AnnotationError, match=r"category 1 \('coco_person'\): K=17 in the "
                                              r"target, K=8 in"):
        add_skeletons(mini, 'mp100_mini.json', sources)


def test_category_name_mismatch(unified, sources):
    target = copy.deepcopy(unified[0])
    next(c for c in target['categories'] if c['id'] == 33)['name'] = 'Squirrel'
    with pytest.raises(AnnotationError, match=r"category 33: named 'Squirrel' in the target, "
                                              r"'squirrel_body' in"):
        add_skeletons(target, 'target.json', sources)
    _, report = add_skeletons(target, 'target.json', sources, check_names=False)
    assert report.ids('unchanged') == list(range(1, 101))


def test_links_without_keypoint_0_are_flagged():
    """0-indexed links that never touch keypoint 0 cannot be decided by 'auto' when loading."""
    sources = SourceSkeletons(files=['s.json'], categories={
        7: SourceCategory('a', 4, [[1, 2], [2, 3]], 's.json')})
    target = dict(images=[], annotations=[], categories=[
        dict(id=7, name='a', keypoints=['p', 'q', 'r', 's'], skeleton=[])])
    out, report = add_skeletons(target, 't.json', sources)
    assert out['categories'][0]['skeleton'] == [[1, 2], [2, 3]]
    assert report.ids('added') == [7] and report.needs_base0 == [7]
    assert 'links of categories [7] never use keypoint 0' in report.summary()
    assert 'skeleton_index_base=0' in report.summary()


def test_linked_file_without_keypoint_0_loads_with_auto(tiny_coco, tmp_path, capsys):
    """The CLI end to end on the tiny set: category 1 gets links that never use keypoint 0. The
    written file declares info.skeleton_index_base = 0, which the dataset's 'auto' honours; the
    report goes to a folder that does not exist yet."""
    source = tiny_coco()
    source.category(1)['skeleton'] = [[1, 2], [2, 3]]
    source.data['info']['skeleton_index_base'] = 0  # else 'auto' could not read the source
    src_path = source.write(name='source.json')
    target = tiny_coco(mutate=lambda d: d['categories'][0].update(skeleton=[]))
    out = tmp_path / 'linked' / 'linked.json'
    report_json = tmp_path / 'reports' / 'new' / 'links.json'
    _tool('add_mp100_skeletons').main([str(target.ann_file), str(out), '--source', str(src_path),
                                       '--report-json', str(report_json)])
    assert 'links of categories [1] never use keypoint 0' in capsys.readouterr().out
    rep = _load(report_json)
    assert [(c['id'], c['action']) for c in rep['categories']] == [(1, 'added'), (2, 'unchanged')]
    data = _load(out)
    assert data['info']['skeleton_index_base'] == 0
    ds = MP100Dataset(str(out), test_mode=True, check_images=False, num_episodes=1, num_queries=1,
                      max_kpt_num=8)
    assert ds.categories[1].skeleton == [[1, 2], [2, 3]]
    assert ds.report.declared_skeleton_base == 0
    # re-linking the written file reads it with its declared base too
    again = tmp_path / 'again.json'
    _tool('add_mp100_skeletons').main([str(out), str(again), '--source', str(src_path)])
    assert _load(again)['categories'] == data['categories']
    # a report path that is a folder is refused before anything is written
    with pytest.raises(IsADirectoryError, match='is a folder'):
        _tool('add_mp100_skeletons').main([str(target.ann_file), str(tmp_path / 'x.json'),
                                           '--source', str(src_path), '--report-json',
                                           str(tmp_path / 'reports')])
    assert not (tmp_path / 'x.json').exists()


def test_source_index_base_is_converted_and_sources_must_agree(tmp_path, split_files):
    require(MP100_ANN_DIR)
    data = copy.deepcopy(split_files[(1, 'test')])
    cat = next(c for c in data['categories'] if c['id'] == 33)
    zero_based = [list(p) for p in cat['skeleton']]
    cat['skeleton'] = [[a + 1, b + 1] for a, b in zero_based]
    one = tmp_path / 'one_indexed.json'
    one.write_text(json.dumps(data), encoding='utf-8')
    merged = read_source_skeletons([str(one), str(MP100_ANN_DIR)])  # agree once 0-indexed
    assert merged.categories[33].links == zero_based
    assert merged.categories[33].path == str(one)
    cat['skeleton'] = [[a + 1, b + 1] for a, b in zero_based[:1] + zero_based[2:]]
    one.write_text(json.dumps(data), encoding='utf-8')
    with pytest.raises(AnnotationError, match=r'category 33: the source files disagree '
                                              r'\(.*one_indexed.json: .*16 links; '
                                              r'.*mp100_split1_test.json: .*17 links\)'):
        read_source_skeletons([str(one), str(MP100_ANN_DIR)])


def test_cli_tools_build_then_link(tmp_path, split_files, unified, sources, capsys):
    """Both command-line tools end to end: build the unified file, empty some skeletons, link."""
    uni = tmp_path / 'annotations' / 'unified_ann_file.json'
    _tool('build_mp100_unified').main([str(MP100_ANN_DIR), str(uni), '--allow-missing'])
    assert _load(uni) == unified[0]
    printed = capsys.readouterr().out
    assert 'not found (5, allowed): mp100_split1_train.json' in printed
    with pytest.raises(FileExistsError, match='--overwrite'):
        _tool('build_mp100_unified').main([str(MP100_ANN_DIR), str(uni), '--allow-missing'])

    target = tmp_path / 'annotations' / 'stripped.json'
    target.write_text(json.dumps(_target(unified[0], sources)), encoding='utf-8')
    linked = tmp_path / LINKED
    report_json = tmp_path / 'report.json'
    _tool('add_mp100_skeletons').main([str(target), str(linked), '--source', str(MP100_ANN_DIR),
                                       '--report-json', str(report_json)])
    printed = capsys.readouterr().out
    assert re.search(r'\n\s+10\s+klipspringer_face\s+9\s+0\s+13\s+added\n', printed)
    assert re.search(r'\n\s+2\s+horse_body\s+17\s+17 \(1-idx\)\s+17\s+converted\n', printed)
    assert re.search(r'\n\s+101\s+extra\s+3\s+2 \(1-idx\)\s+2\s+converted \(not in the '
                     r'sources\)\n', printed)
    rep = _load(report_json)
    assert [c['id'] for c in rep['categories'] if c['action'] == 'added'] == STRIPPED
    ds = MP100Dataset(str(linked), split=1, subset='test', test_mode=True, check_images=False,
                      num_episodes=1)
    assert ds.report.skeleton_base == {'0': MP100_SPLITS[1]['test']}
    assert ds.categories[10].skeleton == sources.categories[10].links

    with pytest.raises(ValueError, match='not over the target'):
        _tool('add_mp100_skeletons').main([str(target), str(target), '--source',
                                           str(MP100_ANN_DIR)])


# ------------------------------------------------------------------ missing annotation file
def test_missing_linked_file_error_says_how_to_get_one(tmp_path):
    from metapoint.registry import DATASETS
    from metapoint.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(REPO / 'configs/fmmp/fmmp_r50_1xb16_mp100-split1_1shot.py'))
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg.data_root = str(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        DATASETS.build(ds_cfg)
    msg = str(err.value)
    assert msg.startswith(f'annotation file not found: {tmp_path / LINKED}\n')
    for part in ('official FMMP release', 'build_mp100_unified.py', 'add_mp100_skeletons.py',
                 'docs/annotation_files.md'):
        assert part in msg


def test_missing_file_hints_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'mp100_split3_val.json: an official MP-100 '
                                                r'per-split file'):
        MP100Dataset(str(tmp_path / 'mp100_split3_val.json'))
    with pytest.raises(FileNotFoundError, match=r'unified_ann_file.json: MetaPoint'):
        MP100Dataset(str(tmp_path / 'unified_ann_file.json'))
    with pytest.raises(FileNotFoundError) as err:
        MP100Dataset(str(tmp_path / 'mine.json'))
    assert str(err.value) == f'annotation file not found: {tmp_path / "mine.json"}'
