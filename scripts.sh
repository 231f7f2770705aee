#!/usr/bin/env bash
# One entry point for the common jobs. Usage: bash scripts.sh <command> [args]
#   install      install everything into the current Python environment (CPU or CUDA)
#   install-browser  install the distribution's chromium + chromium-driver (apt; root or sudo):
#                the browser the web-demo test drives (it skips with a reason without them)
#   quickstart   generate the bundled synthetic MP-100 (if missing) and run the main job on it
#                (METAPOINT_VERBOSE=1: mmengine's full console log, environment and config included)
#   test         run the test suite (without, then with the optional test data; docs/testing.md)
#   synthetic    (re)generate the synthetic set: random categories [out dir] [extra args]
#   synthetic-real  render the synthetic set from real MP-100 poses: needs the val/test annotation
#                files of the 5 splits in MP100_ANN_DIR (default data/mp100_annotations)
#   supportcopy  SupportCopy (floor) evaluation: supportcopy <split 1-5> <shots 1|5> [data root]
#   metapoint-train <split> <shots> [gpus]       MetaPoint official recipe on data/mp100
#   metapoint-test <split> <shots> <ckpt> [gpus] evaluate a MetaPoint checkpoint
#   metapoint-train-all [gpus] / metapoint-test-all <work_dirs root> [gpus] [final|best]
#                every split x shot; tests the final checkpoint (epoch_200, as published) unless
#                'best' asks for the best-on-val one
#   checkpoint <work dir> [final|best]           print the checkpoint test-all would pick
#   metapoint-ablations [gpus]                   train every ablation config (split 1, 1-shot)
#   fmmp-train / fmmp-test / fmmp-train-all / fmmp-test-all / fmmp-ablations: the same for FMMP
#   capeformer-train / capeformer-test / capeformer-train-all / capeformer-test-all: the same for
#                CapeFormer (official per-split files, categories in file order)
#   capeformer-unified-train / -test / -train-all / -test-all: CapeFormer on the unified-file
#                protocol (the MetaPoint / FMMP test episodes)
#   metapoint-cpu      the CPU learning check on the synthetic real-pose set (~16 min + 6 min test)
#   fmmp-cpu [mixup|zero|both]  FMMP CPU learning check (mixup vs zero padding, 2 threads each)
#   capeformer-cpu     the CapeFormer CPU learning check (~11 min training + 3 min test, 2 threads)
#   <model>-cross <split|all> [gpus]   cross-super-category split (human-body, human-face,
#                vehicle, furniture; docs/cross_category.md) of metapoint, fmmp or capeformer:
#                train, then test the final checkpoint (val = test categories)
#   <model>-cross-test <split> <ckpt> [gpus]  evaluate a cross-super-category checkpoint
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-python}
SYNTH_DIR=${SYNTH_DIR:-data/synthetic_mp100}
SYNTH_REAL_DIR=${SYNTH_REAL_DIR:-data/synthetic_mp100_real}
# folder holding mp100_split{1..5}_{val,test}.json (every *.json there is read: keep only those)
MP100_ANN_DIR=${MP100_ANN_DIR:-data/mp100_annotations}

install() {
  local pip="$PY -m pip install --disable-pip-version-check"
  if ! $PY -c "import torch, torchvision" >/dev/null 2>&1; then
    $pip -r requirements/torch.txt
  fi
  $pip -r requirements/build.txt
  $pip -r requirements/runtime.txt
  $pip -r requirements/tools.txt
  $pip --no-build-isolation --no-binary xtcocotools -r requirements/xtcocotools.txt
  $pip --no-deps -r requirements/mmpose.txt
  $pip -r requirements/tests.txt
  $pip --no-deps --no-build-isolation -e .
  $PY -c "import metapoint, mmpose, mmcv, mmengine, xtcocotools, torch; \
print('metapoint', metapoint.__version__, '| torch', torch.__version__, '| mmengine', \
mmengine.__version__, '| mmcv', mmcv.__version__, '| mmpose', mmpose.__version__)"
}

install_browser() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install-browser: $(chromium --version 2>/dev/null) and chromedriver already installed"
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install Chromium and a matching ChromeDriver, then" >&2
    echo "  set CHROMIUM_BIN and CHROMEDRIVER_BIN (docs/demo.md)" >&2
    return 1
  fi
  $sudo apt-get update -q || true
  $sudo apt-get install -y -q chromium chromium-driver
}

synthetic() {
  local out=${1:-$SYNTH_DIR}; shift || true
  $PY tools/dataset_converters/make_synthetic_mp100.py --out "$out" --source random \
    --img-size 128 --seed 0 "$@"
}

synthetic_real() {
  local out=${1:-$SYNTH_REAL_DIR}; shift || true
  local missing="" split subset
  for split in 1 2 3 4 5; do for subset in val test; do
    [ -f "$MP100_ANN_DIR/mp100_split${split}_${subset}.json" ] || \
      missing="$missing mp100_split${split}_${subset}.json"
  done; done
  if [ -n "$missing" ]; then
    echo "synthetic-real: MP100_ANN_DIR=$MP100_ANN_DIR lacks the MP-100 annotation files:$missing" >&2
    echo "  put the val and test files of the 5 splits there, or point MP100_ANN_DIR at a folder" >&2
    echo "  holding them (docs/synthetic_data.md)" >&2
    return 1
  fi
  $PY tools/dataset_converters/make_synthetic_mp100.py --out "$out" --source mp100 \
    --mp100-ann-dir "$MP100_ANN_DIR" --img-size 128 --seed 0 --workers 2 "$@"
}

quickstart() {
  # quiet console (progress, warnings, result tables); METAPOINT_VERBOSE=1 prints the full
  # mmengine log (environment, config, optimizer lines), which the log files keep anyway
  local verbose=''
  case "${METAPOINT_VERBOSE:-0}" in 0|'') ;; *) verbose=--verbose ;; esac
  if [ ! -f "$SYNTH_DIR/annotations/unified_ann_file.json" ]; then
    synthetic "$SYNTH_DIR"
  fi
  # 1) the SupportCopy floor on the unseen split-1 test categories
  # shellcheck disable=SC2086
  $PY tools/test.py configs/support_copy/supportcopy_synthetic-split1_1shot.py \
    --work-dir work_dirs/quickstart_supportcopy $verbose \
    --cfg-options "test_dataloader.dataset.data_root=$SYNTH_DIR"
  # 2) a short MetaPoint training run on CPU, then its evaluation on the same categories
  local cfg=configs/metapoint/metapoint_r18_1xb8_synthetic-random-split1_1shot_quickstart.py
  local opts="train_dataloader.dataset.data_root=$SYNTH_DIR val_dataloader.dataset.data_root=$SYNTH_DIR test_dataloader.dataset.data_root=$SYNTH_DIR"
  # shellcheck disable=SC2086
  $PY tools/train.py "$cfg" --work-dir work_dirs/quickstart_metapoint $verbose \
    --cfg-options $opts
  # shellcheck disable=SC2086
  $PY tools/test.py "$cfg" work_dirs/quickstart_metapoint/epoch_2.pth \
    --work-dir work_dirs/quickstart_metapoint/test $verbose --cfg-options $opts
}

# test [pytest args]: with args, plain pytest. Without: (1) the whole suite as a clone without
# the optional test data runs it; the number of tests skipped for missing data must equal the one
# in docs/testing.md; (2) those tests again with the data (METAPOINT_SHARED_DATA, default shared/
# beside the clone) when it is there.
run_tests() {
  if [ $# -gt 0 ]; then $PY -m pytest -q -p no:cacheprovider "$@"; return; fi
  local expected list empty ids
  expected=$(sed -n 's/^Tests that skip without the optional data: \*\*\([0-9]*\)\*\*.*/\1/p' \
    docs/testing.md)
  [ -n "$expected" ] || { echo "docs/testing.md states no skip count" >&2; return 1; }
  list=$(mktemp) empty=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$list' '$empty'" RETURN
  echo "== 1/2: the suite without the optional test data (expecting $expected data skips)"
  METAPOINT_SHARED_DATA=$empty $PY -m pytest tests -q -p no:cacheprovider -rs --rootdir=. \
    --expect-data-skips="$expected" --data-skips-out="$list"
  mapfile -t ids < "$list"
  local data=${METAPOINT_SHARED_DATA:-../shared}
  if [ ${#ids[@]} -eq 0 ]; then
    echo "== 2/2: no test needs the optional test data"
  elif [ -d "$data/data" ] || [ -d "$data/fixtures" ]; then
    echo "== 2/2: the ${#ids[@]} tests that need the optional test data, with $data"
    $PY -m pytest -q -p no:cacheprovider --rootdir=. "${ids[@]}"
  else
    echo "== 2/2: optional test data not found at $data: its ${#ids[@]} tests stay skipped"
  fi
}

supportcopy() {
  local split=${1:-1} shots=${2:-1} root=${3:-data/mp100}
  $PY tools/test.py configs/support_copy/supportcopy_mp100-split1_1shot.py \
    --work-dir "work_dirs/supportcopy_mp100-split${split}_${shots}shot" \
    --cfg-options "test_dataloader.dataset.split=$split" \
    "test_dataloader.dataset.num_shots=$shots" "test_dataloader.dataset.data_root=$root"
}

# config of a model's official recipe:
# model_config <metapoint|fmmp|capeformer|capeformer-unified> <split> <shots>
model_config() {
  case "$1" in
    metapoint) echo "configs/metapoint/metapoint_r50_4xb16_mp100-split${2}_${3}shot.py" ;;
    fmmp) echo "configs/fmmp/fmmp_r50_1xb16_mp100-split${2}_${3}shot.py" ;;
    capeformer) echo "configs/capeformer/capeformer_r50_1xb16_mp100-split${2}_${3}shot.py" ;;
    capeformer-unified)
      echo "configs/capeformer/capeformer_r50_1xb16_mp100-split${2}_${3}shot_unified.py" ;;
    *) echo "unknown model $1" >&2; return 2 ;;
  esac
}

model_train() {
  local model=$1 split=${2:-1} shots=${3:-1} gpus=${4:-1} cfg
  cfg=$(model_config "$model" "$split" "$shots")
  if [ "$gpus" -gt 1 ]; then bash tools/dist_train.sh "$cfg" "$gpus" "${@:5}"
  else $PY tools/train.py "$cfg" "${@:5}"; fi
}

model_test() {
  local model=$1 split=${2:-1} shots=${3:-1} ckpt=$4 gpus=${5:-1} cfg
  cfg=$(model_config "$model" "$split" "$shots")
  if [ "$gpus" -gt 1 ]; then bash tools/dist_test.sh "$cfg" "$ckpt" "$gpus" "${@:6}"
  else $PY tools/test.py "$cfg" "$ckpt" "${@:6}"; fi
}

# checkpoint <work dir> [final|best]: the final checkpoint (the highest epoch_N.pth, what the
# papers report: the official runs never validate) or, when asked, the best one on val
checkpoint() {
  local dir=$1 which=${2:-final} ckpt
  case "$which" in
    final) ckpt=$(ls "$dir"/epoch_*.pth 2>/dev/null | sort -V | tail -n1 || true) ;;
    best) ckpt=$(ls "$dir"/best_mPCK_*.pth 2>/dev/null | sort -V | tail -n1 || true) ;;
    *) echo "checkpoint: final or best, not '$which'" >&2; return 2 ;;
  esac
  [ -n "$ckpt" ] || { echo "no $which checkpoint under $dir" >&2; return 1; }
  echo "$ckpt"
}

model_all() {
  local model=$1 what=$2 arg=${3:-} gpus=${4:-1} which=${5:-final}
  for split in 1 2 3 4 5; do for shots in 1 5; do
    if [ "$what" = train ]; then model_train "$model" "$split" "$shots" "${arg:-1}"
    else
      local name ckpt
      name=$(basename "$(model_config "$model" "$split" "$shots")" .py)
      ckpt=$(checkpoint "$arg/$name" "$which") || return 1
      echo "== $name: testing $ckpt ($which checkpoint)"
      model_test "$model" "$split" "$shots" "$ckpt" "$gpus"
    fi
  done; done
}

model_ablations() {
  local model=$1 gpus=${2:-1} cfg
  for cfg in "configs/$model"/ablations/*.py; do
    if [ "$gpus" -gt 1 ]; then bash tools/dist_train.sh "$cfg" "$gpus"
    else $PY tools/train.py "$cfg"; fi
  done
}

# cpu_check <work dir> <config> <final epoch> <threads> [train.py args]: a CPU learning check on
# the synthetic real-pose set (rendered first when missing): train, then test the final checkpoint
cpu_check() {
  local work=$1 cfg=$2 epoch=$3 threads=$4
  shift 4
  [ -f "$SYNTH_REAL_DIR/annotations/unified_ann_file.json" ] || synthetic_real "$SYNTH_REAL_DIR"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$threads} \
    $PY tools/train.py "$cfg" --work-dir "$work" "$@"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$threads} \
    $PY tools/test.py "$cfg" "$work/epoch_$epoch.pth" --work-dir "$work/test"
}

# one thread per process unless told otherwise: with two threads a second job on the 2-core box
# made iterations about 10x slower (docs/metapoint.md, "Learning check on CPU")
metapoint_cpu() {
  cpu_check work_dirs/metapoint_cpu \
    configs/metapoint/metapoint_r18_1xb8_synthetic-real-split1_1shot_cpu.py 4 1 "$@"
}

# two threads (the 2-core budget; keep the box otherwise idle), as fmmp-cpu
capeformer_cpu() {
  cpu_check work_dirs/capeformer_cpu \
    configs/capeformer/capeformer_r18_1xb8_synthetic-real-split1_1shot_cpu.py 6 2 "$@"
}

CROSS_SPLITS="human-body human-face vehicle furniture"

# config of a cross-super-category split: cross_config <metapoint|fmmp|capeformer> <split>
cross_config() {
  local model=$1 split=$2 cfg
  case " $CROSS_SPLITS " in
    *" $split "*) ;;
    *) echo "unknown cross-super-category split '$split' (one of: $CROSS_SPLITS)" >&2; return 2 ;;
  esac
  case "$model" in
    metapoint) cfg=metapoint_r50_4xb16 ;;
    fmmp) cfg=fmmp_r50_1xb16 ;;
    capeformer) cfg=capeformer_r50_1xb16 ;;
    *) echo "unknown model $model" >&2; return 2 ;;
  esac
  echo "configs/$model/cross_category/${cfg}_mp100-cross-${split}_1shot.py"
}

model_cross_test() {
  local model=$1 split=$2 ckpt=$3 gpus=${4:-1} cfg
  cfg=$(cross_config "$model" "$split")
  if [ "$gpus" -gt 1 ]; then bash tools/dist_test.sh "$cfg" "$ckpt" "$gpus" "${@:5}"
  else $PY tools/test.py "$cfg" "$ckpt" "${@:5}"; fi
}

# model_cross <model> <split|all> [gpus]: train on the other categories, then test the final
# checkpoint (the validation categories are the test categories, so best-on-val is not used)
model_cross() {
  local model=$1 which=${2:-} gpus=${3:-1} split cfg ckpt splits
  [ -n "$which" ] || { echo "$model-cross: name a split ($CROSS_SPLITS) or all" >&2; return 2; }
  splits=$which
  [ "$which" = all ] && splits=$CROSS_SPLITS
  for split in $splits; do
    cfg=$(cross_config "$model" "$split")
    if [ "$gpus" -gt 1 ]; then bash tools/dist_train.sh "$cfg" "$gpus"
    else $PY tools/train.py "$cfg"; fi
    ckpt=$(checkpoint "work_dirs/$(basename "$cfg" .py)" final)
    echo "== $(basename "$cfg" .py): testing $ckpt (final checkpoint)"
    model_cross_test "$model" "$split" "$ckpt" "$gpus"
  done
}

# FMMP CPU learning check: the mixup-padding recipe, then the zero-padding one, each trained with
# the 2-core budget (2 threads; keep the box otherwise idle). fmmp-cpu [mixup|zero|both]
fmmp_cpu() {
  [ -f "$SYNTH_REAL_DIR/annotations/unified_ann_file.json" ] || synthetic_real "$SYNTH_REAL_DIR"
  local base=configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu which=${1:-both}
  run_one() {  # <name> <config>
    local start=$SECONDS
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2} \
      $PY tools/train.py "$2" --work-dir "work_dirs/fmmp_cpu_$1"
    echo "fmmp-cpu $1: training took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2} \
      $PY tools/test.py "$2" "work_dirs/fmmp_cpu_$1/epoch_6.pth" \
      --work-dir "work_dirs/fmmp_cpu_$1/test"
  }
  case "$which" in
    mixup) run_one mixup "$base.py" ;;
    zero) run_one zero "${base}_train-pad-zero.py" ;;
    both) run_one mixup "$base.py" && run_one zero "${base}_train-pad-zero.py" ;;
    *) echo "fmmp-cpu: mixup, zero or both" >&2; return 2 ;;
  esac
}

cmd=${1:-help}; shift || true
case "$cmd" in
  install) install ;;
  install-browser) install_browser ;;
  quickstart) quickstart ;;
  test) run_tests "$@" ;;
  synthetic) synthetic "$@" ;;
  synthetic-real) synthetic_real "$@" ;;
  supportcopy) supportcopy "$@" ;;
  checkpoint) checkpoint "$@" ;;
  metapoint-train|fmmp-train|capeformer-train|capeformer-unified-train)
    model_train "${cmd%-train}" "$@" ;;
  metapoint-test|fmmp-test|capeformer-test|capeformer-unified-test)
    model_test "${cmd%-test}" "$@" ;;
  metapoint-train-all|fmmp-train-all|capeformer-train-all|capeformer-unified-train-all)
    model_all "${cmd%-train-all}" train "${1:-1}" ;;
  metapoint-test-all|fmmp-test-all|capeformer-test-all|capeformer-unified-test-all)
    model_all "${cmd%-test-all}" test "$@" ;;
  metapoint-cross|fmmp-cross|capeformer-cross) model_cross "${cmd%-cross}" "$@" ;;
  metapoint-cross-test|fmmp-cross-test|capeformer-cross-test)
    model_cross_test "${cmd%-cross-test}" "$@" ;;
  metapoint-ablations|fmmp-ablations) model_ablations "${cmd%-ablations}" "$@" ;;
  metapoint-cpu) metapoint_cpu "$@" ;;
  fmmp-cpu) fmmp_cpu "$@" ;;
  capeformer-cpu) capeformer_cpu "$@" ;;
  *) sed -n '2,/^set /{/^#/p}' "$0"; [ "$cmd" = help ] || exit 2 ;;
esac
