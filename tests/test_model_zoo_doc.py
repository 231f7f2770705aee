"""docs/model_zoo.md stays in sync with configs/ (pure file parsing, no imports of the package).

* every config under configs/ (outside _base_) is the first cell of a row of one of the page's
  tables that has the columns config, backbone, shots, split and protocol;
* every config path the page names exists;
* in those tables, the rows of the MP-100 split configs (ablations included) state the split and
  shot count of the file name.
"""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / 'docs' / 'model_zoo.md'

# a config path as the page writes it, in backticks or not
_PATH = re.compile(r'configs/[A-Za-z0-9_./-]+\.py')
# the first cell of a row that names one config
_CONFIG_CELL = re.compile(r'^`(configs/[^`]+\.py)`$')
_SPLIT_SHOT = re.compile(r'_mp100-split([1-5])_([15])shot')
# the columns every config table has, matched by the start of the header cell
_COLUMNS = ('config', 'backbone', 'shots', 'split', 'protocol')


def _configs_on_disk():
    return sorted(
        p.relative_to(REPO).as_posix() for p in (REPO / 'configs').rglob('*.py')
        if '_base_' not in p.relative_to(REPO).parts)


def _doc_text():
    return DOC.read_text(encoding='utf-8')


def _cells(line):
    return [c.strip() for c in line.strip().strip('|').split('|')]


def _tables():
    """Every markdown table of the page as (header cells, rows of cells)."""
    tables, block = [], []
    for line in _doc_text().splitlines() + ['']:
        if line.lstrip().startswith('|'):
            block.append(_cells(line))
            continue
        if len(block) >= 2:
            tables.append((block[0], block[2:]))  # block[1] is the |---| line
        block = []
    return tables


def _column(header, name):
    for i, cell in enumerate(header):
        if cell.lower().startswith(name):
            return i
    return None


def _config_rows():
    """(config path, {column name: cell}) for the rows of the config tables."""
    rows = []
    for header, body in _tables():
        index = {name: _column(header, name) for name in _COLUMNS}
        if any(i is None for i in index.values()):
            continue
        for cells in body:
            m = _CONFIG_CELL.match(cells[0]) if cells else None
            if m and len(cells) == len(header):
                rows.append((m.group(1), {n: cells[i] for n, i in index.items()}))
    return rows


def test_every_config_is_listed_in_a_config_table():
    listed = {path for path, _ in _config_rows()}
    missing = [p for p in _configs_on_disk() if p not in listed]
    assert not missing, (
        'configs missing from docs/model_zoo.md: add a row for each to a table with the columns '
        f'{_COLUMNS}: {missing}')


def test_every_named_config_exists():
    named = sorted(set(_PATH.findall(_doc_text())))
    assert named, 'docs/model_zoo.md names no config'
    stale = [p for p in named if not (REPO / p).is_file()]
    assert not stale, f'docs/model_zoo.md names configs that do not exist: {stale}'


def test_split_and_shot_columns_match_the_file_names():
    checked = 0
    for path, row in _config_rows():
        m = _SPLIT_SHOT.search(path)
        if not m or path.startswith('configs/support_copy/'):
            continue
        split, shots = m.groups()
        assert row['split'] == split, f'{path}: split column {row["split"]!r}, expected {split}'
        assert row['shots'] == f'{shots} / {shots}', (
            f'{path}: shots column {row["shots"]!r}, expected "{shots} / {shots}" (train / test)')
        checked += 1
    # 10 MetaPoint + 10 FMMP + 20 CapeFormer split rows and 31 ablation rows, at least
    assert checked >= 71, checked
