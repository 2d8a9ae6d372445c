#!/usr/bin/env bash
# Everything this project measures on a lent GPU, in one command (the device tool's `run`):
#
#     bash benchmarks/gpu_session.sh OUTDIR
#
# Carried along (git-ignored, made here by `bash benchmarks/gpu_session.sh --prepare`):
# .gpu/wheels (pypng, which the GPU image lacks), .gpu/data (kodim01's clean image for the
# 12 MP photo) and benchmarks/cases (the paper.py cases: Set5 and Set14 at full size).
#
# Parts, most wanted first, each with its own time limit (seconds, from the environment; SR_S=0
# skips part 4), each
# writing into OUTDIR as it goes, so that a part cut off still leaves the others' results:
#   1. the CUDA tests (stacks against members alone, graphs against eager)       TESTS_S
#   2. multifit.py throughput: separate CUDA-graph fits against stacks           MULTIFIT_S
#   3. a 12 MP photo denoised with the paper and the fast presets, a few steps   LARGE_S
#   4. paper.py: x4 super-resolution on Set5 and Set14 at full size, paper preset  SR_S
set -u
if [ "${1:-}" = "--prepare" ]; then  # here, before the call
    set -e
    mkdir -p .gpu/wheels .gpu/data/Denoising/Color/25
    grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d .gpu/wheels \
        'pypng==0.20220715.0'
    cp ../shared/data/dip-paper/project-page/Denoising/Color/25/kodim01_GT.png \
        .gpu/data/Denoising/Color/25/
    .venv/bin/python benchmarks/paper.py --prepare-only --tasks superres
    du -sh .gpu benchmarks/cases
    exit 0
fi
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site DIP_PAPER_DATA=$PWD/.gpu/data
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
# The installed layout without installing: dip.cli is cli/, dip.configs is configs/.
[ -e dip/cli ] || ln -s ../cli dip/cli
[ -e dip/configs ] || ln -s ../configs dip/configs
started=$(date +%s)
part() { echo "== $1 at +$(( $(date +%s) - started )) s" | tee -a "$out/parts.txt"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  git rev-parse --short HEAD 2>/dev/null; } | tee "$out/gpu.txt"

part tests
timeout "${TESTS_S:-90}" python3 -m pytest -q -p no:cacheprovider -k "cuda or stack" \
    tests/test_stack.py tests/test_fit.py tests/test_sure.py tests/test_red.py \
    > "$out/tests.log" 2>&1
tail -4 "$out/tests.log" | tee "$out/tests.txt"

part multifit
mf="$out/multifit_cuda.json"
# (the first: bfloat16 inside the stack too, issue 14's untried lever for the paper's K=16)
for spec in "128 paper 1,2,4,8,16,32 separate,stacked,stacked_bf16" \
            "128 fast 1,2,4,8,16,32,64 separate,stacked" "64,256 paper 1,4,16 separate,stacked" \
            "64,256 fast 1,4,16 separate,stacked"; do
    set -- $spec
    timeout "${MULTIFIT_S:-60}" python3 benchmarks/multifit.py throughput --device cuda \
        --sizes "$1" --nets "$2" --ks "$3" --ways "$4" --steps 20 --out "$mf" \
        2>&1 | grep -v '^{' | tail -40
done > "$out/multifit.txt"
python3 benchmarks/multifit.py table --out "$mf" 2>/dev/null | head -40 >> "$out/multifit.txt"

part large
# if the stacks' CUDA tests failed, the photo still runs, its tiles one after another
fallback=$(grep -qE "[0-9]+ failed|error" "$out/tests.txt" && echo "--set perf.stack=off")
for preset in paper fast; do
    timeout "${LARGE_S:-75}" python3 benchmarks/tiles.py large --size 4000x3000 --iters 20 \
        --preset $preset $fallback --results "$out/tiles_large_cuda.jsonl" 2>&1 | tail -3
done > "$out/large.txt"

part superres
[ "${SR_S:-150}" -gt 0 ] && timeout "${SR_S:-150}" python3 benchmarks/paper.py --device cuda --tasks superres \
    --sets Set5,Set14 --methods dip --workers 7 --results "$out/paper_full_sr.jsonl" \
    > "$out/paper_sr.log" 2>&1
part end
