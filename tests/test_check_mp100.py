"""tools/misc/check_mp100.py and ``skip_incomplete_categories`` on damaged copies of real data.

Every test copies mp100_mini (real photos) into tmp_path, then removes, empties or renames images
(or edits the annotation copy) and checks what the checker / the dataset / the metric report.
The per-split test uses the real MP-100 val/test annotation files with a hand-made image tree.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import MP100_ANN_DIR, MP100_MINI, REPO, require

from metapoint.datasets import MP100_SPLITS, AnnotationError, ImageLoadError, MP100Dataset
from metapoint.datasets.image_files import image_problem
from metapoint.datasets.mp100_check import check_mp100
from metapoint.evaluation import CAPEMetric, format_pck_table

MINI_TEST = [19, 20, 23, 24, 25, 26, 28, 29, 30, 31, 32, 36]
MINI_TRAIN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 21, 22, 27, 33, 34,
              35, 37]
# mp100_mini README table: category id -> (instances, images)
MINI_COUNTS = {
    1: (12, 4), 2: (5, 3), 3: (14, 3), 4: (12, 4), 5: (3, 2), 6: (9, 3), 7: (4, 2), 8: (6, 2),
    9: (4, 2), 10: (5, 5), 11: (5, 5), 12: (3, 3), 13: (4, 4), 14: (4, 4), 15: (2, 2),
    16: (3, 3), 17: (2, 2), 18: (4, 3), 19: (2, 2), 20: (2, 2), 21: (4, 2), 22: (2, 2),
    23: (4, 4), 24: (2, 2), 25: (4, 2), 26: (10, 4), 27: (2, 2), 28: (2, 2), 29: (2, 2),
    30: (2, 2), 31: (3, 3), 32: (2, 2), 33: (2, 2), 34: (2, 2), 35: (2, 2), 36: (2, 2),
    37: (2, 2),
}
MINI_ARGS = ['--ann-file', 'annotations/mp100_mini.json', '--split-file', 'splits.json']


def _load_cli():
    spec = importlib.util.spec_from_file_location('check_mp100_cli',
                                                  REPO / 'tools' / 'misc' / 'check_mp100.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = _load_cli()


@pytest.fixture
def mini(tmp_path):
    """A writable copy of mp100_mini (the shared copy is read-only)."""
    root = tmp_path / 'mini'
    shutil.copytree(require(MP100_MINI), root, copy_function=shutil.copyfile,
                    ignore=shutil.ignore_patterns('preview.png'))
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o755)
    return root


def run_cli(capsys, root, *args):
    """(exit status, stdout, JSON report) of ``check_mp100.py root args --json``."""
    out = Path(root).parent / 'report.json'
    rc = CLI.main([str(root), *args, '--json', str(out)])
    text = capsys.readouterr().out
    return rc, text, json.loads(out.read_text(encoding='utf-8'))


def counts(report, cid):
    c = report['categories'][str(cid)]
    return c['instances'], c['images'], c['present'], c['missing'], c['unreadable']


def traps_of(report):
    return {t['id']: t['categories'] for t in report['traps']}


# -------------------------------------------------------------------------------- checker
def test_image_problem(tmp_path):
    good = tmp_path / 'a.jpg'
    shutil.copyfile(require(MP100_MINI) / 'images' / 'zebra' / '810.jpg', good)
    (tmp_path / 'empty.jpg').write_bytes(b'')
    (tmp_path / 'bad.jpg').write_bytes(b'not a jpeg' * 20)
    (tmp_path / 'dir.jpg').mkdir()
    assert image_problem(str(good)) is None and image_problem(str(good), decode=True) is None
    assert image_problem(str(tmp_path / 'nope.jpg')) == 'missing'
    assert image_problem(str(tmp_path / 'dir.jpg')) == 'missing'
    assert image_problem(str(tmp_path / 'empty.jpg')) == 'empty'
    assert image_problem(str(tmp_path / 'bad.jpg')) is None  # stat only: size > 0
    assert image_problem(str(tmp_path / 'bad.jpg'), decode=True) == 'undecodable'


def test_mini_complete(mini, capsys):
    rc, text, rep = run_cli(capsys, mini, *MINI_ARGS)
    assert rc == 0
    assert rep['complete'] and rep['num_categories'] == rep['num_complete_categories'] == 37
    assert rep['traps'] == []
    assert rep['skeleton_index_base'] == {'0': list(range(1, 38))}
    for cid, (inst, imgs) in MINI_COUNTS.items():
        assert counts(rep, cid) == (inst, imgs, imgs, 0, 0), cid
    sub = rep['splits']['default']['subsets']
    assert sub['train']['category_ids'] == MINI_TRAIN and sub['train']['complete']
    assert sub['test']['category_ids'] == MINI_TEST and sub['test']['complete']
    assert 'Categories: 37 of 37 complete' in text
    assert 'split (split file): complete' in text and 'test: complete (12 categories)' in text


def test_mini_removed_emptied_renamed(mini, capsys):
    img = mini / 'images'
    (img / 'onehand10k' / '33.jpg').unlink()                                # removed
    (img / 'coco' / '000000000785.jpg').unlink()                            # shared by 1, 4, 18, 26
    (img / 'atrw' / '000061.jpg').write_bytes(b'')                          # emptied
    (img / 'zebra' / '810.jpg').rename(img / 'zebra' / '000810.jpg')        # zero padding
    (img / 'horse10' / '0244.png').rename(img / 'horse10' / 'horse_0244.jpg')  # prefix + ext
    (img / 'ap10k' / '000000000004.jpg').write_bytes(b'garbage' * 50)       # corrupt (train)

    rc, text, rep = run_cli(capsys, mini, *MINI_ARGS)
    assert rc == 1 and not rep['complete']
    assert counts(rep, 23) == (4, 4, 3, 1, 0)
    assert counts(rep, 32) == (2, 2, 1, 0, 1)
    assert counts(rep, 30) == (2, 2, 1, 1, 0)
    assert counts(rep, 31) == (3, 3, 2, 1, 0)
    for cid in (1, 4, 18, 26):
        inst, imgs = MINI_COUNTS[cid]
        assert counts(rep, cid) == (inst, imgs, imgs - 1, 1, 0), cid
    assert counts(rep, 33) == (2, 2, 2, 0, 0)  # no --decode: a corrupt file counts as present
    cat = rep['categories']
    assert cat['32']['problems'] == {'atrw/000061.jpg': 'empty'}
    assert cat['23']['problems'] == {'onehand10k/33.jpg': 'missing'}
    assert cat['30']['suggestions'] == {'zebra/810.jpg': ['zebra/000810.jpg']}
    assert cat['31']['suggestions'] == {'horse10/0244.png': ['horse10/horse_0244.jpg']}
    assert cat['23']['suggestions'] == {}
    assert traps_of(rep) == {'close_file_names': [30, 31]}
    assert cat['32']['blocker'] == '1 unreadable' and cat['23']['blocker'] == '1 missing'

    sub = rep['splits']['default']['subsets']
    assert sub['train']['blocked'] == {'1': '1 missing', '4': '1 missing', '18': '1 missing'}
    assert sub['test']['blocked'] == {'23': '1 missing', '26': '1 missing', '30': '1 missing',
                                      '31': '1 missing', '32': '1 unreadable'}
    assert 'test: 7 of 12 categories complete, blocked by 5:' in text
    assert 'missing: zebra/810.jpg  (found: zebra/000810.jpg)' in text
    assert 'empty: atrw/000061.jpg' in text

    # --decode also catches the corrupt training image; the test subset alone is checked
    rc, text, rep = run_cli(capsys, mini, *MINI_ARGS, '--decode', '--subset', 'train')
    assert rc == 1 and list(rep['splits']['default']['subsets']) == ['train']
    assert rep['categories']['33']['problems'] == {'ap10k/000000000004.jpg': 'undecodable'}
    assert rep['splits']['default']['subsets']['train']['blocked']['33'] == '1 unreadable'


def test_mini_traps_h5_deepfashion_similar_folder(mini, capsys):
    img = mini / 'images'
    for f in (img / 'fly').glob('*.jpg'):
        f.unlink()
    (img / 'fly' / 'annotation_data_release.h5').write_bytes(b'\x89HDF\r\n\x1a\n' + b'0' * 64)
    (img / 'deepfashion2').rename(img / 'DeepFashion')
    (img / 'locust').rename(img / 'Locust')

    rc, text, rep = run_cli(capsys, mini, *MINI_ARGS)
    assert rc == 1
    assert traps_of(rep) == {'h5_only': [28], 'deepfashion_folder': [36],
                             'similar_folder': [29]}
    msgs = {t['id']: t['message'] for t in rep['traps']}
    assert 'fly/ which holds annotation_data_release.h5' in msgs['h5_only']
    assert 'extract the frames from the .h5 volume' in msgs['h5_only']
    assert msgs['h5_only'].endswith('(see docs/data_preparation.md#h5_only)')
    assert 'expect folder deepfashion2/' in msgs['deepfashion_folder']
    assert 'DeepFashion/ does' in msgs['deepfashion_folder']
    assert 'Locust/' in msgs['similar_folder']
    cat = rep['categories']
    assert counts(rep, 28) == (2, 2, 0, 2, 0) and cat['28']['traps'] == ['h5_only']
    assert cat['36']['suggestions'] == {'deepfashion2/': ['DeepFashion/']}
    assert cat['29']['suggestions'] == {'locust/': ['Locust/']}
    assert set(rep['splits']['default']['subsets']['test']['blocked']) == {'28', '29', '36'}
    assert rep['splits']['default']['subsets']['train']['complete']
    assert '[h5_only] 28 fly' in text and '[deepfashion_folder] 36' in text
    assert '29 locust: 2 missing (folder locust/ does not exist)' in text


def test_annotation_traps(mini, capsys):
    """Duplicate names, empty name lists and skeleton bases, set up on a copy of the json."""
    data = json.loads((mini / 'annotations' / 'mp100_mini.json').read_text())
    cats = {c['id']: c for c in data['categories']}
    cats[19]['name'] = cats[20]['name'] = 'face'  # as MP-100's categories 18 and 40
    cats[20]['keypoints'] = []                      # K must come from the annotations (29)
    cats[31]['skeleton'] = [[a + 1, b + 1] for a, b in cats[31]['skeleton']]  # 1-indexed
    cats[30]['skeleton'] = []
    cats[32]['skeleton'] = [[1, 2], [2, 3]]          # neither 0 nor K=15: undecidable
    declared = data['info'].pop('skeleton_index_base')  # mixed bases: 'auto' decides each
    (mini / 'annotations' / 'edited.json').write_text(json.dumps(data))

    rc, text, rep = run_cli(capsys, mini, '--ann-file', 'annotations/edited.json',
                            '--split-file', 'splits.json', '--subset', 'test')
    assert rc == 1
    traps = traps_of(rep)
    assert traps['duplicate_name'] == [19, 20]
    assert traps['empty_keypoint_names'] == [20]
    assert traps['skeleton_index_base'] == [30, 31, 32]
    msgs = {t['id']: t['message'] for t in rep['traps']}
    assert "2 categories are named 'face': 19 (folder aflw, 19 keypoints), 20 (folder cofw, " \
        "29 keypoints)" in msgs['duplicate_name']
    assert '20 face K=29' in msgs['empty_keypoint_names']
    assert rep['skeleton_index_base'] == {
        '0': [19, 20, 23, 24, 25, 26, 28, 29, 36], '1': [31], 'empty': [30],
        'undecidable': [32]}
    cat = rep['categories']
    assert cat['20']['num_kpts'] == 29 and cat['20']['num_keypoint_names'] == 0
    assert cat['20']['complete'] and cat['31']['complete'] and cat['30']['complete']
    assert cat['32']['blocker'] == 'annotation error'
    assert 'cannot decide the skeleton index base' in cat['32']['errors'][0]
    assert counts(rep, 32) == (0, 2, 2, 0, 0)  # images still checked for a broken category
    assert rep['splits']['default']['subsets']['test']['blocked'] == {'32': 'annotation error'}

    # the file declares its base (info.skeleton_index_base = 0): 'auto' takes it, as the dataset
    data['info']['skeleton_index_base'] = declared
    (mini / 'annotations' / 'edited.json').write_text(json.dumps(data))
    rc, text, rep = run_cli(capsys, mini, '--ann-file', 'annotations/edited.json',
                            '--split-file', 'splits.json', '--subset', 'test')
    assert rc == 1
    cat = rep['categories']
    assert cat['32']['complete'] and cat['32']['skeleton_index_base'] == '0'
    assert cat['31']['blocker'] == 'annotation error'  # its 1-indexed links reach index K
    assert ('category 31: skeleton index out of range for 22 keypoints with index base 0'
            in cat['31']['errors'][0])
    assert "(index base from the file's info.skeleton_index_base)" in cat['31']['errors'][0]
    assert rep['splits']['default']['subsets']['test']['blocked'] == {'31': 'annotation error'}


def test_real_per_split_files_carfusion(tmp_path, capsys):
    """Real MP-100 split-4 files, no train file, a partial CarFusion 'bus' folder."""
    root = tmp_path / 'mp100'
    (root / 'annotations').mkdir(parents=True)
    for subset in ('val', 'test'):
        os.symlink(require(MP100_ANN_DIR) / f'mp100_split4_{subset}.json',
                   root / 'annotations' / f'mp100_split4_{subset}.json')
    bus = root / 'mp100_images_cc' / 'bus'
    bus.mkdir(parents=True)
    src = require(MP100_MINI) / 'images' / 'zebra' / '810.jpg'
    shutil.copyfile(src, bus / '1300103531.jpg')       # a name of the annotations: present
    shutil.copyfile(src, bus / '001300303531.jpg')     # zero padded
    shutil.copyfile(src, bus / 'bus_1300910400.JPG')   # prefix + extension case

    rc, text, rep = run_cli(capsys, root, '--split', '4')
    assert rc == 1
    subs = rep['splits']['4']['subsets']
    assert 'annotation file not found' in subs['train']['error']
    assert len(subs['val']['blocked']) == 10 and len(subs['test']['blocked']) == 20
    traps = traps_of(rep)
    assert traps['duplicate_name'] == [18, 40]       # 'face': AFLW (18) and 300W (40)
    assert traps['empty_keypoint_names'] == [18, 40]
    assert traps['carfusion_names'] == [38, 51]      # bus (test), suv (val)
    assert 'skeleton_index_base' not in traps        # every skeleton of these files is 0-based
    cat = rep['categories']
    assert (cat['18']['num_kpts'], cat['40']['num_kpts']) == (19, 68)
    assert cat['18']['folders'] == ['amur_tiger_body'] and cat['40']['folders'] == ['human_face']
    assert counts(rep, 38) == (100, 100, 1, 99, 0)
    assert cat['38']['suggestions'] == {'bus/1300303531.jpg': ['bus/001300303531.jpg'],
                                        'bus/1300910400.jpg': ['bus/bus_1300910400.JPG']}
    bus_msg = next(t['message'] for t in rep['traps'] if t['id'] == 'carfusion_names')
    assert '38 bus: 99 CarFusion image(s) missing' in bus_msg and '2 have a closely' in bus_msg
    assert 'Re-map the rest by annotation' in bus_msg
    assert bus_msg.endswith('(docs/data_preparation.md#carfusion_names)')
    assert cat['51']['suggestions'] == {'suv/': []}  # no suv folder at all
    # category 18 keeps 209 of its 215 val annotations (zero-area boxes); only those are checked
    assert (cat['18']['annotations'], cat['18']['instances']) == (215, 209)
    assert 'blocked: annotation file not found' in text

    # the requested split must exist
    assert CLI.main([str(root), '--split', '7']) == 2
    assert 'split(s) [\'7\'] not available' in capsys.readouterr().err


# ------------------------------------------------------------- tiny trees (no optional data)
def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding='utf-8')


def _renumber(data, new_ids):
    """The tiny set with its categories 1, 2 renamed to ``new_ids`` (annotations follow)."""
    data = json.loads(json.dumps(data))
    old_to_new = dict(zip((1, 2), new_ids))
    for c in data['categories']:
        c['id'] = old_to_new[c['id']]
    for a in data['annotations']:
        a['category_id'] = old_to_new[a['category_id']]
    return data


def test_per_split_file_must_hold_its_official_list(tiny_coco, capsys):
    """A misnamed file (split 2's test categories saved as split 1's test file) blocks."""
    tc = tiny_coco()
    s2 = MP100_SPLITS[2]['test'][:2]  # 37, 48: not split-1 test categories
    _write(tc.root / 'annotations' / 'mp100_split1_test.json', _renumber(tc.data, s2))
    rep = check_mp100(str(tc.root), splits=[1], subsets=['test'])
    assert rep.layout == 'per-split files'
    (sub,) = rep.subsets
    assert sub.category_ids == s2 and sub.blocked == {}  # the categories themselves are fine
    assert all(rep.categories[c].complete for c in s2)
    path = str(tc.root / 'annotations' / 'mp100_split1_test.json')
    assert sub.error == (f"{path}: categories differ from the official split 1 'test' list: "
                         f"missing {sorted(MP100_SPLITS[1]['test'])}, not in the list "
                         f'{sorted(s2)}')
    assert not rep.complete and not rep.split_complete(1)
    # the same through --ann-file, and in the CLI's verdict
    rc, text, js = run_cli(capsys, tc.root, '--ann-file', 'annotations/mp100_split1_test.json')
    assert rc == 1 and js['layout'] == 'per-split file'
    assert "test: blocked: " + path + ": categories differ from the official split 1" in text


def test_split_file_applies_to_per_split_files(tiny_coco, capsys):
    """With per-split files, --split-file's splitN lists replace the official ones."""
    tc = tiny_coco()
    _write(tc.root / 'annotations' / 'mp100_split1_test.json', tc.data)
    _write(tc.root / 'annotations' / 'mp100_split2_test.json', tc.data)
    _write(tc.root / 'mine.json', {'split1': {'test': [2, 1]}, 'split2': {'test': [1]}})
    rep = check_mp100(str(tc.root), split_file='mine.json', subsets=['test'])
    assert rep.layout == 'per-split files, lists from mine.json'
    assert rep.splits == ['1', '2']
    assert rep.split_complete(1)  # categories 1 and 2 as listed, images present
    (s2,) = [s for s in rep.subsets if s.split == '2']
    assert s2.error.endswith("categories differ from the split 2 'test' list of "
                             f"{tc.root / 'mine.json'}: missing [], not in the list [2]")
    # a file without splitN entries cannot say which per-split files to read
    _write(tc.root / 'flat.json', {'test': [1, 2]})
    assert CLI.main([str(tc.root), '--split-file', 'flat.json']) == 2
    assert 'has no "splitN" entries' in capsys.readouterr().err
    # a per-split file of a split the split file does not list
    _write(tc.root / 'one.json', {'split1': {'test': [1, 2]}})
    with pytest.raises(ValueError, match=r"has no split2 'test' list"):
        check_mp100(str(tc.root), ann_file='annotations/mp100_split2_test.json',
                    split_file='one.json')


def test_per_split_ann_file_outside_the_subsets_is_refused(tiny_coco, capsys):
    tc = tiny_coco()
    _write(tc.root / 'annotations' / 'mp100_split3_val.json', tc.data)
    assert CLI.main([str(tc.root), '--ann-file', 'annotations/mp100_split3_val.json',
                     '--subset', 'test']) == 2
    err = capsys.readouterr().err
    assert "mp100_split3_val.json is the 'val' file of split 3, not among the subsets to check " \
        "['test']" in err
    with pytest.raises(ValueError, match='names split 7, MP-100 has splits'):
        _write(tc.root / 'annotations' / 'mp100_split7_val.json', tc.data)
        check_mp100(str(tc.root), ann_file='annotations/mp100_split7_val.json')


def _tiny_split_file(tc):
    _write(tc.root / 'splits.json', {'test': [1, 2]})
    return dict(ann_file='annotations/tiny.json', split_file='splits.json')


def test_duplicate_annotation_id_across_categories(tiny_coco):
    """Annotation 201 (category 2) renumbered 101 (category 1): each category parses alone,
    the file does not; the checker blocks as the dataset refuses."""
    tc = tiny_coco(mutate=lambda d: d['annotations'][4].update(id=101))
    with pytest.raises(AnnotationError, match='duplicate annotation id 101'):
        MP100Dataset(**tc.dataset_kwargs())
    rep = check_mp100(str(tc.root), **_tiny_split_file(tc))
    (sub,) = rep.subsets
    assert sub.error == f'{tc.ann_file}: duplicate annotation id 101'
    assert not rep.complete
    # a category error stays with its category; the other one is complete
    tc = tiny_coco(mutate=lambda d: d['categories'][1].update(skeleton=[[1, 2]]))
    rep = check_mp100(str(tc.root), **_tiny_split_file(tc))
    (sub,) = rep.subsets
    assert sub.error is None and sub.blocked == {2: 'annotation error'}
    assert rep.categories[1].complete and rep.categories[1].instance_ids == {101, 102, 103, 104}
    assert rep.categories[2].skeleton_index_base == 'undecidable'
    assert len(rep.categories[2].image_files) == 3  # still checked


def test_backslash_file_names(tiny_coco):
    """A Windows-style file name with a zero-padded name on disk: a suggestion and a trap
    (this used to end in StopIteration)."""
    tc = tiny_coco(mutate=lambda d: d['images'][0].update(file_name='birds\\101.png'))
    (tc.img_dir / 'birds').mkdir()
    tc.img_of_ann[101].rename(tc.img_dir / 'birds' / '00101.png')
    rep = check_mp100(str(tc.root), **_tiny_split_file(tc))
    check = rep.categories[1]
    assert check.image_files['birds\\101.png'] == 'missing'
    assert check.suggestions == {'birds\\101.png': ['birds/00101.png']}
    (trap,) = rep.traps
    assert trap.id == 'close_file_names' and trap.categories == [1]
    assert 'e.g. birds\\101.png -> birds/00101.png' in trap.message


def test_real_unified_file_official_splits(tmp_path):
    """A unified file (split-1 val + test files merged): official split lists and order."""
    root = tmp_path / 'mp100'
    (root / 'annotations').mkdir(parents=True)
    merged = {'images': {}, 'annotations': {}, 'categories': {}}
    for subset in ('val', 'test'):
        data = json.loads((require(MP100_ANN_DIR) / f'mp100_split1_{subset}.json').read_text())
        for key, table in merged.items():
            for entry in data[key]:
                table.setdefault(entry['id'], entry)
    (root / 'annotations' / 'unified_ann_file.json').write_text(
        json.dumps({k: list(v.values()) for k, v in merged.items()}))
    shutil.copytree(require(MP100_MINI) / 'images' / 'zebra', root / 'images' / 'zebra')

    rep = check_mp100(str(root), splits=[1])
    assert rep.layout == 'one file, official MP-100 splits'
    assert rep.img_root == str(root / 'images')  # no mp100_images_cc: the next candidate
    assert any('the shipped configs expect' in n for n in rep.notes)
    subs = {s.subset: s for s in rep.subsets}
    for subset in ('train', 'val', 'test'):
        assert subs[subset].category_ids == MP100_SPLITS[1][subset]
    assert subs['train'].blocked == {c: 'not in the annotation file'
                                     for c in MP100_SPLITS[1]['train']}
    assert list(subs['test'].blocked) == MP100_SPLITS[1]['test']
    assert subs['test'].blocked[10] == '100 missing'
    assert sorted(rep.categories) == sorted(MP100_SPLITS[1]['val'] + MP100_SPLITS[1]['test'])
    assert not rep.split_complete(1) and not rep.complete
    with pytest.raises(KeyError, match='split 2 was not checked'):
        rep.split_complete(2)


def test_cli_exit_status(mini, capsys):
    """0 complete / 1 incomplete (also as a real process) / 2 no annotation file."""
    args = [str(mini), *MINI_ARGS, '--subset', 'test', '--problems-only']
    assert CLI.main(args) == 0
    assert 'Categories: 12 of 12 complete (only the others are listed)' in capsys.readouterr().out
    (mini / 'images' / 'cofw' / '001766.jpg').unlink()
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'misc' / 'check_mp100.py'),
                           *args], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert '20 face_cofw: 1 missing' in proc.stdout
    assert 'missing: cofw/001766.jpg' in proc.stdout
    assert CLI.main([str(mini / 'images')]) == 2
    assert 'no annotation file found' in capsys.readouterr().err


# ----------------------------------------------------------- skip_incomplete_categories
def mini_test_dataset(root, **kw):
    args = dict(ann_file='annotations/mp100_mini.json', data_root=str(root),
                data_prefix=dict(img='images'), split_file='splits.json', subset='test',
                max_kpt_num=40, num_shots=1, num_queries=1, num_episodes=1, pipeline=[],
                test_mode=True)
    args.update(kw)
    return MP100Dataset(**args)


def test_missing_test_image_default_is_error(mini):
    gone = mini / 'images' / 'fly' / '1400.jpg'
    gone.unlink()
    with pytest.raises(ImageLoadError, match=r'1 image file\(s\) missing or empty, first .*'
                       + str(gone).replace('.', r'\.') + r' \(missing; annotation \d+\)'):
        mini_test_dataset(mini)


def test_skip_incomplete_categories(mini, mm_logs):
    (mini / 'images' / 'fly' / '1400.jpg').unlink()
    (mini / 'images' / 'atrw' / '000061.jpg').write_bytes(b'')
    ds = mini_test_dataset(mini, skip_incomplete_categories=True)
    kept = [c for c in MINI_TEST if c not in (28, 32)]
    assert list(ds.categories) == kept and list(ds.cat_to_indices) == kept
    assert [e.category_id for e in ds.episodes] == kept
    assert ds.incomplete_categories == {28: 1, 32: 1}
    assert ds.report.skipped_categories == {'image files missing or empty': [28, 32]}
    assert ds.metainfo['category_coverage'] == dict(
        requested=12, used=kept, skipped={'image files missing or empty': [28, 32]})
    warn = [r.getMessage() for r in mm_logs if 'skip_incomplete_categories' in r.getMessage()]
    assert len(warn) == 1
    assert 'skipped 2 of 12 categories' in warn[0] and '[28, 32]' in warn[0]
    assert '28: 1 of 2 image(s), first ' in warn[0] and 'fly/1400.jpg (missing)' in warn[0]
    assert 'atrw/000061.jpg (empty)' in warn[0]
    # nothing missing: nothing skipped, coverage complete
    full = mini_test_dataset(require(MP100_MINI), skip_incomplete_categories=True)
    assert full.metainfo['category_coverage'] == dict(requested=12, used=MINI_TEST, skipped={})
    with pytest.raises(ValueError, match='needs check_images'):
        mini_test_dataset(mini, skip_incomplete_categories=True, check_images=False)


def test_metric_states_coverage(mini, tmp_path):
    """The dataset's coverage reaches the metric's table and JSON via dataset_meta."""
    (mini / 'images' / 'fly' / '1400.jpg').unlink()
    ds = mini_test_dataset(mini, skip_incomplete_categories=True)
    metric = CAPEMetric(out_dir=str(tmp_path / 'eval'))
    metric.dataset_meta = ds.metainfo
    for ep in ds.episodes:  # perfect predictions: copy the ground truth
        q = ds.instances[ep.query_indices[0]]
        s = ds.instances[ep.support_indices[0]]
        k = q['num_kpts']
        metric.process({}, [dict(
            category_id=ep.category_id, query_ann_ids=np.array([q['ann_id']]),
            pred_kpts=q['keypoints'][:, :k], gt_kpts=q['keypoints'][:, :k],
            query_vis=q['keypoints_visible'][:, :k], support_vis=s['keypoints_visible'][:, :k],
            bbox_size=np.array([q['bbox_size']]), num_kpts=k)])
    res = metric.evaluate(size=len(ds.episodes))
    assert res['PCK@0.2'] == 1.0
    data = json.loads((tmp_path / 'eval' / 'cape_metrics.json').read_text())
    kept = [c for c in MINI_TEST if c != 28]
    assert data['categories'] == dict(evaluated=11, total=12, evaluated_ids=kept,
                                      not_evaluated={'image files missing or empty': [28]})
    assert set(data['per_category']) == {str(c) for c in kept}
    text = format_pck_table(res, metric.last_per_category, metric.last_coverage)
    assert text.splitlines()[0] == ('Evaluated 11 of 12 categories (not evaluated: image files '
                                    'missing or empty: [28])')
    # a dataset without coverage information: no line, no JSON entry
    plain = CAPEMetric()
    plain.process({}, [dict(category_id=1, query_ann_ids=np.array([1]),
                            pred_kpts=np.zeros((1, 2, 2)), gt_kpts=np.zeros((1, 2, 2)),
                            query_vis=np.ones((1, 2)), support_vis=np.ones((1, 2)),
                            bbox_size=np.array([10.0]), num_kpts=2)])
    plain.evaluate(size=1)
    assert plain.last_coverage is None
    assert 'Evaluated' not in format_pck_table({}, plain.last_per_category, None)


def test_tools_test_partial_data(mini, tmp_path):
    """tools/test.py with SupportCopy on the mini test split, one category's image removed.

    (Without the option the same run stops with the ImageLoadError of
    test_missing_test_image_default_is_error.)
    """
    (mini / 'images' / 'fly' / '1400.jpg').unlink()
    work = tmp_path / 'work'
    out = tmp_path / 'out.json'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    args = [sys.executable, 'tools/test.py', 'configs/support_copy/supportcopy_mini_1shot.py',
            '--work-dir', str(work), '--out', str(out), '--cfg-options',
            f'test_dataloader.dataset.data_root={mini}', 'test_dataloader.dataset.num_episodes=1',
            'test_dataloader.dataset.skip_incomplete_categories=True']
    run = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'Evaluated 11 of 12 categories (not evaluated: image files missing or empty: [28])' \
        in run.stdout
    for path in (work / 'cape_metrics.json', out):
        data = json.loads(path.read_text())
        assert data['categories']['evaluated'] == 11 and data['categories']['total'] == 12
        assert '28' not in data['per_category'] and len(data['per_category']) == 11
