"""One forward and one forward + backward of the cuda backend at the bar's shape (after a warm-up), for a profiler:
    ncu --section WarpStateStats -k regex:"(forward|backward)_" -c 2 python benchmarks/cuda_profile.py [CELL] [NHxD]
The calls are ``fusedrnn bench``'s fw / fwbw (``fusedrnn_case``)."""

import sys

import torch

from fusedrnn.cli.bench import Shape, fusedrnn_case

cell = sys.argv[1] if len(sys.argv) > 1 else "lstm"
NH, D = (int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "12x64").split("x"))
case = fusedrnn_case("cuda", Shape(cell, NH, D, 16, 1024), torch.bfloat16, torch.device("cuda"))
for _ in range(2):
    case["fwbw"]()
torch.cuda.synchronize()
case["fw"]()
case["fwbw"]()
torch.cuda.synchronize()
