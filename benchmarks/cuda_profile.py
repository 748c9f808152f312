"""One forward and one forward + backward of the cuda backend at the bar's shape (after a warm-up), for a profiler:
    ncu --section WarpStateStats -k regex:rnn_ -c 2 python benchmarks/cuda_profile.py [CELL] [NHxD]"""

import sys

import torch

from fusedrnn import get_cell, rnn

cell = sys.argv[1] if len(sys.argv) > 1 else "lstm"
NH, D = (int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "12x64").split("x"))
spec = get_cell(cell)
B, T = 16, 1024
x = torch.randn(B, T, spec.num_gates_x, NH, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
R = (torch.randn(spec.num_gates_r, NH, D, D, device="cuda") / D**0.5).to(torch.bfloat16).requires_grad_()
b = torch.randn(spec.num_gates_b, NH, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
for _ in range(2):
    y, _ = rnn(x, R, b, cell=cell, backend="cuda")
    y.float().sum().backward()
torch.cuda.synchronize()
with torch.no_grad():
    rnn(x, R, b, cell=cell, backend="cuda")
y, _ = rnn(x, R, b, cell=cell, backend="cuda")
y.float().sum().backward()
torch.cuda.synchronize()
