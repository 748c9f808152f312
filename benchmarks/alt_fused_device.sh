#!/usr/bin/env bash
# The fused forward step of the alternating backend on one GPU, in one call of at most ~6 minutes:
# (1) the alternating backend's GPU tests, (2) benchmarks/alt_fused_bench.py (fused vs GEMM path, tile
# alternatives, LSTM 1 x 4096, larger batches). Logs under $OUT (or ./out).
# Usage: bash benchmarks/alt_fused_device.sh
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; git rev-parse HEAD 2>/dev/null;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } 2>&1 | tee "$out/env.txt"
start=$SECONDS
# (1) tests; a hang must not eat the benchmark's time
timeout -k 10 210 python3 -m pytest -q -m gpu -n 8 -p no:cacheprovider tests/test_alternating*.py 2>&1 \
  | tee "$out/gpu-tests.txt" | tail -25
rc=${PIPESTATUS[0]}
echo "tests: $((SECONDS - start)) s, exit $rc (124: timed out)" | tee -a "$out/gpu-tests.txt"
# (2) timings: one process, back to back; rows are printed (and written to JSON) as they come
timeout -k 10 $((345 - (SECONDS - start))) python3 benchmarks/alt_fused_bench.py --json "$out/alt_fused.json" 2>&1 \
  | tee "$out/alt_fused.txt" | tail -50
echo "total: $((SECONDS - start)) s" | tee -a "$out/alt_fused.txt"
