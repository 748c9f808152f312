#!/usr/bin/env bash
# The full benchmark sweep (BENCHMARKS.md and the README plot) as one device command on
# nvidia-h100-x1: 4 cells x 5 head splits of hidden 768 x B in {1, 16, 64, 256} x T in {256, 1024, 4096},
# forward and forward + backward, bf16; fusedrnn's GPU backends, cuDNN bf16 / fp16 and the PyTorch loop.
# Results under $OUT (or ./out): bench.jsonl (appended row by row), bench.json, bench.csv, bench.md, bench.png,
# bench.log (the table), bench.err (progress), env.txt, info.txt.
#
# Usage: bash benchmarks/run_bench_sweep.sh [EARLIER_BENCH_JSONL]
#   With the bench.jsonl of a run that stopped at its time budget, it continues that run (--resume): the
#   rows already measured are kept and not measured again. BENCH_TIME_BUDGET (seconds, default 480) stops
#   the sweep cleanly before the device's 10-minute limit; extra bench options go in BENCH_ARGS.
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ $# -ge 1 ] && [ "$1" != "$out/bench.jsonl" ]; then
  cp "$1" "$out/bench.jsonl"
fi
# BENCH_COMMIT: the commit of the tree being measured, where the machine's .git may not have it (the device
# machine receives the working tree; its .git HEAD can lag behind)
commit=${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)}
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv; echo "commit ${commit:-unknown}";
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"; } > "$out/env.txt" 2>&1
python3 -m fusedrnn info > "$out/info.txt" 2>&1
# T = 1024 and B = 16 first: if the budget runs out, DESIGN.md's protocol point is measured for every cell.
# 8 processes compile the Triton kernels of all shapes first (~1 minute of compilation in one process).
# shellcheck disable=SC2086
python3 -m fusedrnn bench --cells lstm gru elman slstm --heads 48x16 12x64 6x128 3x256 1x768 \
    --batch 16 1 64 256 --steps 1024 256 4096 --dtype bfloat16 --modes fw fwbw \
    --compile-workers 8 --out "$out" --resume "$out/bench.jsonl" --time-budget "${BENCH_TIME_BUDGET:-480}" \
    ${commit:+--commit "$commit"} ${BENCH_ARGS:-} > "$out/bench.log" 2> "$out/bench.err"
rc=$?
cat "$out/env.txt"
grep -E "rows in|time budget|interrupted|wrote" "$out/bench.log"
tail -n 3 "$out/bench.err"
exit $rc
