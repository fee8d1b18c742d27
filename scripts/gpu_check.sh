#!/usr/bin/env bash
# scripts/gpu_check.sh OUTDIR [--dry-run]
#
# What a user with a GPU runs first, and what the project checks on any new GPU machine.
# Installs nothing: it assumes the project was installed with `pip install --no-deps -e .` into
# a Python that already has torch (CUDA) and Triton. Meant to finish in 9 minutes on one H200:
# every step has a time limit (below), and a step stopped by its limit keeps what it wrote.
# Everything it writes goes under OUTDIR (docs/ is not touched):
#
#   OUTDIR/env.txt                      device, driver, torch / Triton / CUDA versions
#   OUTDIR/junit-gpu.xml                pytest -m gpu over tests/
#   OUTDIR/junit-kernels.xml            the kernel test files (Triton compiled for real)
#   OUTDIR/runs/cram-seed0/             paper-preset CRAM run (metrics.csv, transition.json, ...)
#   OUTDIR/runs/transformer-seed0/      paper-preset Transformer run
#   OUTDIR/bench_realistic.jsonl        cram bench kernels --shapes realistic, one row per line
#   OUTDIR/bench_model.json             model-level timing rows from the two paper runs
#   OUTDIR/throughput.txt               tokens/s of CRAM at the paper preset, alternating: steps
#                                       with per-step read-backs and a data thread (before issue
#                                       16), sync-free steps with the thread, and sync-free
#                                       steps with a data worker process (the CUDA default)
#                                       (scripts/bench_throughput.py)
#   OUTDIR/throughput_compile.txt       only with CRAM_GPU_CHECK_COMPILE=1 (about 2 more
#                                       minutes): sync-free + process steps, eager against
#                                       train.compile=true, alternating
#   OUTDIR/gpu_util.csv                 GPU utilisation every 5 s while the paper runs train
#   OUTDIR/logs/<step>.log              each step's stdout and stderr
#   OUTDIR/steps.tsv                    step, exit status, seconds (124: stopped by its limit)
#   OUTDIR/summary.md                   one page: step status and time, tests, key ratios
#
# Order: the two paper-preset runs train in the background while the two test steps run (the
# tests only check correctness, so sharing the GPU changes no number they report; the runs'
# train_seconds are therefore an upper bound); the timed benchmarks then run alone.
#
# --dry-run prints every command it would run and exits 0 without running any.
# Exit status: 0 when every step succeeded, 1 when a step failed (the others still run),
# 2 on bad arguments (OUTDIR missing).

set -uo pipefail

# ---- settings: edit here ---------------------------------------------------------------------
# The paper preset trains its own step count (2400, learned routing schedule); set
# CRAM_GPU_CHECK_STEPS to train fewer. Time limits in seconds (0: none); SIGINT at the limit,
# so a training run stops as after Ctrl-C (resumable with `cram train --resume`).
TRAIN_STEPS="${CRAM_GPU_CHECK_STEPS:-}"
TRAIN_SET=()                 # extra overrides, e.g. (--set train.log_every=100)
SEED=0
TRAIN_LIMIT="${CRAM_GPU_CHECK_TRAIN_LIMIT:-330}"      # each paper-preset run (they run together)
TESTS_LIMIT="${CRAM_GPU_CHECK_TESTS_LIMIT:-330}"      # each test step (they run together)
BENCH_LIMIT="${CRAM_GPU_CHECK_BENCH_LIMIT:-110}"      # realistic routed-attention shapes
MODEL_LIMIT="${CRAM_GPU_CHECK_MODEL_LIMIT:-40}"       # model-level timing rows
THROUGHPUT_LIMIT="${CRAM_GPU_CHECK_THROUGHPUT_LIMIT:-60}"
COMPILE="${CRAM_GPU_CHECK_COMPILE:-0}"                # 1: also step 6b (torch.compile)
COMPILE_LIMIT="${CRAM_GPU_CHECK_COMPILE_LIMIT:-150}"
THROUGHPUT_STEPS=30          # per run; the rate is read over the second half (after compiling)
PYTHON="${PYTHON:-python}"   # the interpreter the project is installed in
CRAM="${CRAM:-cram}"         # its console script
# -----------------------------------------------------------------------------------------------

usage() { echo "usage: scripts/gpu_check.sh OUTDIR [--dry-run]" >&2; }

OUTDIR=""
DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $arg" >&2; usage; exit 2 ;;
        *) if [[ -n "$OUTDIR" ]]; then echo "gpu_check.sh: one OUTDIR only" >&2; exit 2; fi
           OUTDIR="$arg" ;;
    esac
done
if [[ -z "$OUTDIR" ]]; then
    echo "gpu_check.sh: OUTDIR is missing (usage: scripts/gpu_check.sh OUTDIR [--dry-run])" >&2
    exit 2
fi

case "$OUTDIR" in /*) ;; *) OUTDIR="$PWD/$OUTDIR" ;; esac   # before the cd below
cd "$(dirname "$0")/.." || exit 2   # repository root: the tests and pytest config live there
mkdir_cmd=(mkdir -p "$OUTDIR/logs" "$OUTDIR/runs")
STEPS_ARGS=()
if [[ -n "$TRAIN_STEPS" ]]; then STEPS_ARGS=(--steps "$TRAIN_STEPS"); fi

STATUS_FILE="$OUTDIR/steps.tsv"

# limited LIMIT CMD...: CMD under `timeout` (SIGINT at LIMIT s, SIGKILL 15 s later); LIMIT 0: none
limited() {
    local limit="$1"; shift
    if [[ "$limit" -gt 0 ]]; then timeout -s INT -k 15 "$limit" "$@"; else "$@"; fi
}

# run NAME LIMIT [--to FILE] CMD...: print the command; unless --dry-run, run it (stdout into
# FILE when given, else with stderr into OUTDIR/logs/NAME.log) and record name, exit status and
# seconds in OUTDIR/steps.tsv.
run() {
    local name="$1" limit="$2" file=""; shift 2
    if [[ "$1" == "--to" ]]; then file="$2"; shift 2; fi
    printf '%q ' "$@"; [[ -n "$file" ]] && echo "> $file" || echo
    [[ $DRY -eq 1 ]] && return 0
    local t0 rc
    t0=$(date +%s)
    if [[ -n "$file" ]]; then
        limited "$limit" "$@" >"$file" 2>"$OUTDIR/logs/$name.log"
    else
        limited "$limit" "$@" >"$OUTDIR/logs/$name.log" 2>&1
    fi
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >>"$STATUS_FILE"
    if [[ $rc -ne 0 ]]; then echo "  -> $name failed (exit $rc), see $OUTDIR/logs/$name.log" >&2; fi
    return 0
}

if [[ $DRY -eq 0 ]]; then "${mkdir_cmd[@]}" || exit 2; : >"$STATUS_FILE"; else
    printf '%q ' "${mkdir_cmd[@]}"; echo; fi

# 1. the machine
run env 60 --to "$OUTDIR/env.txt" "$PYTHON" -c "import platform, torch, triton; \
print('python', platform.python_version()); print('torch', torch.__version__, 'cuda', \
torch.version.cuda); print('triton', triton.__version__); print('device', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
run nvidia_smi 60 nvidia-smi

# 2. the paper preset, CRAM and the Transformer, in the background (folder names as
#    `cram bench srcd` makes them, so that `cram bench kernels --model-runs` finds them) ...
util=(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5)
printf '%q ' "${util[@]}"; echo "> $OUTDIR/gpu_util.csv (while the paper runs train)"
util_pid=""
if [[ $DRY -eq 0 ]] && command -v nvidia-smi >/dev/null; then
    "${util[@]}" >"$OUTDIR/gpu_util.csv" 2>/dev/null & util_pid=$!
fi
pids=()
for model in cram transformer; do
    run "train_$model" "$TRAIN_LIMIT" "$CRAM" train --model "$model" --preset paper \
        --out "$OUTDIR/runs/$model-seed$SEED" --seed "$SEED" --quiet \
        ${STEPS_ARGS[@]+"${STEPS_ARGS[@]}"} ${TRAIN_SET[@]+"${TRAIN_SET[@]}"} &
    pids+=($!)
    [[ $DRY -eq 1 ]] && wait "$!"   # keep the printed order
done

# 3. ... while the tests run, the two files at once: GPU-marked ones anywhere, and the kernel
#    files (their Triton tests compile for real). On the first H200 check, run one after the
#    other, they took 284 s and 194 s beside the training runs, more than the runs themselves.
#    --continue-on-collection-errors: with a --no-deps install some optional packages (browser,
#    PyMC, ...) may be missing; their test files then fail to import, the others still run.
run tests_gpu "$TESTS_LIMIT" "$PYTHON" -m pytest -q -m gpu tests -p no:cacheprovider \
    --continue-on-collection-errors --durations=15 --junitxml "$OUTDIR/junit-gpu.xml" &
pids+=($!)
[[ $DRY -eq 1 ]] && wait "$!"
run tests_kernels "$TESTS_LIMIT" "$PYTHON" -m pytest -q -m "not gpu" \
    tests/test_kernels_routed_attention.py tests/test_kernels_ct_scan.py \
    tests/test_kernels_bench.py -p no:cacheprovider --continue-on-collection-errors --durations=15 \
    --junitxml "$OUTDIR/junit-kernels.xml" &
pids+=($!)
wait "${pids[@]}"
[[ -n "$util_pid" ]] && kill "$util_pid" 2>/dev/null

# 4. timed benchmarks, alone on the GPU: routed attention at GPU-sized shapes against flash
#    attention (rows streamed, so a run stopped by its limit keeps them), ...
run bench_realistic "$BENCH_LIMIT" "$CRAM" bench kernels --json --no-docs --shapes realistic \
    --parts routed --stream "$OUTDIR/bench_realistic.jsonl"

# 5. ... model-level timing rows (model_infer / model_step) from the two paper runs, ...
run bench_model "$MODEL_LIMIT" --to "$OUTDIR/bench_model.json" "$CRAM" bench kernels --json \
    --no-docs --parts model --model-runs "$OUTDIR/runs"

# 6. ... and CRAM's training throughput: per-step host read-backs, data thread or process
run throughput "$THROUGHPUT_LIMIT" --to "$OUTDIR/throughput.txt" "$PYTHON" \
    scripts/bench_throughput.py --presets paper --models cram --steps "$THROUGHPUT_STEPS" \
    --variant "read-back+thread=$PYTHON;ENV:CRAM_SYNC_FREE=0;train.data_worker=thread" \
    --variant "sync-free+thread=$PYTHON;ENV:CRAM_SYNC_FREE=1;train.data_worker=thread" \
    --variant "sync-free+process=$PYTHON;ENV:CRAM_SYNC_FREE=1;train.data_worker=process"

# 6b. ... and, when asked (it does not fit in the 9 minutes), eager against torch.compile
if [[ "$COMPILE" == 1 ]]; then
    run throughput_compile "$COMPILE_LIMIT" --to "$OUTDIR/throughput_compile.txt" "$PYTHON" \
        scripts/bench_throughput.py --presets paper --models cram --steps "$THROUGHPUT_STEPS" \
        --variant "eager=$PYTHON;ENV:CRAM_SYNC_FREE=1;train.data_worker=process" \
        --variant "compiled=$PYTHON;ENV:CRAM_SYNC_FREE=1;train.data_worker=process;train.compile=true"
fi

# 7. summary
run summary 60 "$PYTHON" scripts/gpu_check_summary.py "$OUTDIR"

if [[ $DRY -eq 1 ]]; then exit 0; fi
echo "summary: $OUTDIR/summary.md"
if awk -F'\t' '$2 != 0 { bad = 1 } END { exit !bad }' "$STATUS_FILE"; then exit 1; fi
exit 0
