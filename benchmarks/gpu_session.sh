#!/usr/bin/env bash
# Everything this project measures on a lent GPU, in one command (the device tool's `run`):
#
#     bash benchmarks/gpu_session.sh OUTDIR
#
# CUDA tests, the CUDA speed table (benchmarks/speed.py) and the preset sweep on the 128x128
# crops (benchmarks/presets.py; the crops are made here by `presets.py prepare` and carried
# along as benchmarks/crops). Each part has its own time limit and writes into OUTDIR as it
# goes, so a part that runs long still leaves the others' results.
set -u
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
# The installed layout without installing: dip.cli is cli/, dip.configs is configs/.
[ -e dip/cli ] || ln -s ../cli dip/cli
[ -e dip/configs ] || ln -s ../configs dip/configs

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  git rev-parse --short HEAD 2>/dev/null; } | tee "$out/gpu.txt"

timeout "${TESTS_S:-120}" python3 -m pytest -q -p no:cacheprovider tests/test_fit.py \
    2>&1 | tail -4 | tee "$out/tests.txt"

timeout "${SPEED_S:-200}" python3 benchmarks/speed.py --device cuda --sizes 128,256,512 \
    --modes "${SPEED_MODES:-baseline,dip,dip-cl,dip-bf16}" --check \
    --json "$out/speed_cuda.json" 2>&1 | tee "$out/speed_cuda.md"

# The runs a first session left, and settings to try (PSNR curves at fixed budgets). Rows
# already in benchmarks/results/presets_gpu.jsonl are not run again.
w48="net.channels_down=[48,48,48,48,48];net.channels_up=[48,48,48,48,48]"
w32="net.channels_down=[32,32,32,32,32];net.channels_up=[32,32,32,32,32]"
[ -f benchmarks/results/presets_gpu.jsonl ] && cp benchmarks/results/presets_gpu.jsonl "$out/"
timeout "${SWEEP_S:-240}" python3 benchmarks/presets.py run --device cuda \
    --workers "${WORKERS:-10}" --threads 1 \
    --pairs "${PAIRS:-paper:denoise,paper:inpaint,w32lr2f:inpaint,w32f:superres,w32lr2s:superres,w48lr2:denoise}" \
    --variant "w48lr2:$w48;optim.lr=0.02" --variant "w32lr2:$w32;optim.lr=0.02" \
    --variant "w32lr2f:$w32;optim.lr=0.02;stop.rule=fixed;optim.iters=3000" \
    --variant "w32lr2s:$w32;optim.lr=0.02;stop.rule=fixed;optim.iters=1500" \
    --variant "w32f:$w32;stop.rule=fixed;optim.iters=1500" \
    --results "$out/presets_gpu.jsonl" > "$out/sweep.log" 2>&1
echo "sweep: $(grep -c . "$out/presets_gpu.jsonl" 2>/dev/null) runs"; tail -3 "$out/sweep.log"
