"""Run every cell once forward and backward on backend ``cuda`` at a small shape (B = 3: a partial batch tile,
T = 5, two heads; D = 64 and 128 (the transposed kernels) in bf16 and D = 16 in float32, with and without
lengths; on sm_90 also a D = 256 head over a thread-block cluster, and the forward of a D = 768 head, whose R is
partly in shared memory). Run under compute-sanitizer by tests/test_cuda.py (``compute-sanitizer --tool memcheck|racecheck python
tests/sanitize_cuda.py``)."""

import torch

from fusedrnn import get_cell, rnn

for cell in ("lstm", "gru", "elman", "slstm"):
    spec = get_cell(cell)
    for D, dtype in ((64, torch.bfloat16), (128, torch.bfloat16), (16, torch.float32)):
        for lengths in (None, torch.tensor([5, 0, 3])):
            B, T, NH = 3, 5, 2
            x = torch.randn(B, T, spec.num_gates_x, NH, D, device="cuda", dtype=dtype, requires_grad=True)
            R = (torch.randn(spec.num_gates_r, NH, D, D, device="cuda") / D**0.5).to(dtype).requires_grad_()
            b = torch.randn(spec.num_gates_b, NH, D, device="cuda", dtype=dtype, requires_grad=True)
            y, final = rnn(x, R, b, cell=cell, backend="cuda", lengths=lengths)
            (y.float().sum() + final.float().sum()).backward()
            torch.cuda.synchronize()
            print(cell, D, dtype, "lengths" if lengths is not None else "", "ok", flush=True)

if torch.cuda.get_device_capability() == (9, 0):  # heads over a thread-block cluster: forward and backward
    for cell in ("lstm", "gru", "elman", "slstm"):
        spec = get_cell(cell)
        for lengths in (None, torch.tensor([5, 0, 3])):
            B, T, NH, D = 3, 5, 2, 256
            x = torch.randn(B, T, spec.num_gates_x, NH, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            R = (torch.randn(spec.num_gates_r, NH, D, D, device="cuda") / D**0.5).to(torch.bfloat16).requires_grad_()
            b = torch.randn(spec.num_gates_b, NH, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            y, final = rnn(x, R, b, cell=cell, backend="cuda", lengths=lengths)
            (y.float().sum() + final.float().sum()).backward()
            torch.cuda.synchronize()
            print(cell, D, "cluster", "lengths" if lengths is not None else "", "ok", flush=True)
    for cell in ("lstm", "gru"):  # D = 768: R partly in shared memory (forward only)
        spec = get_cell(cell)
        for lengths in (None, torch.tensor([5, 0, 3])):
            B, T, NH, D = 3, 5, 1, 768
            x = torch.randn(B, T, spec.num_gates_x, NH, D, device="cuda", dtype=torch.bfloat16)
            R = (torch.randn(spec.num_gates_r, NH, D, D, device="cuda") / D**0.5).to(torch.bfloat16)
            b = torch.randn(spec.num_gates_b, NH, D, device="cuda", dtype=torch.bfloat16)
            with torch.no_grad():
                y, final = rnn(x, R, b, cell=cell, backend="cuda", lengths=lengths)
            torch.cuda.synchronize()
            print(cell, D, "cluster", "streamed", "lengths" if lengths is not None else "", "ok", flush=True)
