#!/usr/bin/env bash
# Issue 5 on the device machine in one command: warm the cubin cache (compile-all for this GPU), the cuda
# backend's GPU tests, and its benchmark next to triton and cuDNN. Under $OUT (or ./out): summary.txt,
# compile_all.log, tests.log, bench.txt (the tables), bench.jsonl.
#   CUDA_TESTS: pytest arguments (default: the cuda backend's GPU tests and the lengths / torch.compile cases
#   that name it); CUDA_BENCH=0 skips the benchmark; BENCH_COMMIT names the commit measured.
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
commit=${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)}
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv; echo "commit ${commit:-unknown}";
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"; } > "$out/summary.txt" 2>&1
start=$(date +%s)
python3 -m fusedrnn info --compile-all --arch sm_90a --jobs 16 > "$out/compile_all.log" 2>&1
echo "compile-all rc $? in $(( $(date +%s) - start )) s: $(tail -1 "$out/compile_all.log")" >> "$out/summary.txt"
start=$(date +%s)
# shellcheck disable=SC2086
python3 -m pytest -q -m gpu -n 8 -p no:cacheprovider -rfEs ${CUDA_TESTS:-tests/test_cuda.py tests/test_lengths.py tests/test_compile.py -k "cuda or Cuda"} > "$out/tests.log" 2>&1
echo "tests rc $? in $(( $(date +%s) - start )) s: $(tail -1 "$out/tests.log")" >> "$out/summary.txt"
grep -E "^(FAILED|ERROR)" "$out/tests.log" | head -40 >> "$out/summary.txt"
if [ "${CUDA_BENCH:-1}" != "0" ]; then
  python3 -m fusedrnn bench --backends cuda triton --cells lstm gru elman slstm --heads 48x16 12x64 6x128 \
      --batch 16 --steps 1024 --dtype bfloat16 --modes fw fwbw --baselines cudnn-bf16 cudnn-fp16 \
      --commit "${commit:-unknown}" --out /tmp/cuda-bench --time-budget "${BENCH_TIME_BUDGET:-150}" > "$out/bench.txt" 2> /dev/null
  echo "bench rc $?" >> "$out/summary.txt"
  cp /tmp/cuda-bench/bench.jsonl "$out/bench.jsonl"
fi
cat "$out/summary.txt"
