#!/usr/bin/env bash
# One entry point for the common jobs. Usage: bash scripts.sh <command> [args]
#   install      install everything into the current Python environment (CPU or CUDA)
#   quickstart   generate the bundled synthetic MP-100 (if missing) and run the main job on it
#   test         run the test suite
#   synthetic    (re)generate the synthetic set: random categories [out dir] [extra args]
#   synthetic-real  render the synthetic set from real MP-100 poses (needs an annotation folder)
#   supportcopy  SupportCopy (floor) evaluation: supportcopy <split 1-5> <shots 1|5> [data root]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python}
SYNTH_DIR=${SYNTH_DIR:-data/synthetic_mp100}
SYNTH_REAL_DIR=${SYNTH_REAL_DIR:-data/synthetic_mp100_real}
MP100_ANN_DIR=${MP100_ANN_DIR:-../shared/data/mp100_annotations}

install() {
  local pip="$PY -m pip install --disable-pip-version-check"
  if ! $PY -c "import torch, torchvision" >/dev/null 2>&1; then
    $pip -r requirements/torch.txt
  fi
  $pip -r requirements/build.txt
  $pip -r requirements/runtime.txt
  $pip --no-build-isolation --no-binary xtcocotools -r requirements/xtcocotools.txt
  $pip --no-deps -r requirements/mmpose.txt
  $pip -r requirements/tests.txt
  $pip --no-deps --no-build-isolation -e .
  $PY -c "import metapoint, mmpose, mmcv, mmengine, xtcocotools, torch; \
print('metapoint', metapoint.__version__, '| torch', torch.__version__, '| mmengine', \
mmengine.__version__, '| mmcv', mmcv.__version__, '| mmpose', mmpose.__version__)"
}

synthetic() {
  local out=${1:-$SYNTH_DIR}; shift || true
  $PY tools/dataset_converters/make_synthetic_mp100.py --out "$out" --source random \
    --img-size 128 --seed 0 "$@"
}

synthetic_real() {
  local out=${1:-$SYNTH_REAL_DIR}; shift || true
  $PY tools/dataset_converters/make_synthetic_mp100.py --out "$out" --source mp100 \
    --mp100-ann-dir "$MP100_ANN_DIR" --img-size 128 --seed 0 --workers 2 "$@"
}

quickstart() {
  if [ ! -f "$SYNTH_DIR/annotations/unified_ann_file.json" ]; then
    synthetic "$SYNTH_DIR"
  fi
  # main job until a learned model lands: the SupportCopy floor on unseen split-1 categories
  $PY tools/test.py configs/support_copy/supportcopy_synthetic-split1_1shot.py \
    --work-dir work_dirs/quickstart_supportcopy \
    --cfg-options "test_dataloader.dataset.data_root=$SYNTH_DIR"
}

run_tests() {
  $PY -m pytest tests -q -p no:cacheprovider "$@"
}

supportcopy() {
  local split=${1:-1} shots=${2:-1} root=${3:-data/mp100}
  $PY tools/test.py configs/support_copy/supportcopy_mp100-split1_1shot.py \
    --work-dir "work_dirs/supportcopy_mp100-split${split}_${shots}shot" \
    --cfg-options "test_dataloader.dataset.split=$split" \
    "test_dataloader.dataset.num_shots=$shots" "test_dataloader.dataset.data_root=$root"
}

cmd=${1:-help}; shift || true
case "$cmd" in
  install) install ;;
  quickstart) quickstart ;;
  test) run_tests "$@" ;;
  synthetic) synthetic "$@" ;;
  synthetic-real) synthetic_real "$@" ;;
  supportcopy) supportcopy "$@" ;;
  *) sed -n '2,9p' "$0"; [ "$cmd" = help ] || exit 2 ;;
esac
