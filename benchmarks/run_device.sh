#!/usr/bin/env bash
# What runs on the GPU machine: the GPU tests, then the benchmarks, logs under $OUT (or ./out).
# Usage: bash benchmarks/run_device.sh [bench|test|integrations|all]
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
what=${1:-all}
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; git rev-parse HEAD 2>/dev/null;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"; } 2>&1 | tee "$out/env.txt"
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 benchmarks/bench_backends.py --backends triton --cells lstm gru elman slstm --heads 12x64 48x16 6x128 \
      --cudnn --cold-cache --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
fi
if [ "$what" = test ] || [ "$what" = all ]; then
  python3 -m pytest -q -m gpu -n 8 -p no:cacheprovider tests 2>&1 | tee "$out/gpu-tests.txt" | tail -40
fi
if [ "$what" = integrations ]; then
  # xlstm / TiRex against their own CUDA paths (needs xlstm, tirex-ts and, for their kernels, nvcc and ninja)
  python3 benchmarks/bench_integrations.py --out "$out/integrations.jsonl" 2>&1 | tee "$out/integrations.txt"
fi
