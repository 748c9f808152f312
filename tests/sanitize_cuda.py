"""Run every cell once forward and backward on backend ``cuda`` at a small shape (B = 3: a partial batch tile,
T = 5, two heads; D = 64 and 128 (the transposed kernels) in bf16 and D = 16 in float32, with and without
lengths); on sm_90 also a D = 256 head over a thread-block cluster and the forward of a D = 768 head, whose R is
partly in shared memory; and heads over a cooperative grid: LSTM D = 2048 as shipped, and every cell at D = 256 with
the device's clusters hidden (what sm_80 runs). Run under compute-sanitizer by tests/test_cuda.py
(``compute-sanitizer --tool memcheck|racecheck python tests/sanitize_cuda.py``)."""

import dataclasses

import torch

from fusedrnn import rnn
from fusedrnn.backends.cuda import planner
from tests.helpers import random_problem

CELLS = ("lstm", "gru", "elman", "slstm")
LENGTHS = (None, torch.tensor([5, 0, 3]))


def run(cell, D, dtype, lengths, NH=2, grad=True, label=""):
    x, R, b, _ = random_problem(cell, 3, 5, NH, D, dtype=dtype, device="cuda", with_state=False)
    if grad:
        x, R, b = (t.requires_grad_() for t in (x, R, b))
        y, final = rnn(x, R, b, cell=cell, backend="cuda", lengths=lengths)
        (y.float().sum() + final.float().sum()).backward()
    else:
        with torch.no_grad():
            rnn(x, R, b, cell=cell, backend="cuda", lengths=lengths)
    torch.cuda.synchronize()
    print(cell, D, dtype, label, "lengths" if lengths is not None else "", "ok", flush=True)


for cell in CELLS:
    for D, dtype in ((64, torch.bfloat16), (128, torch.bfloat16), (16, torch.float32)):
        for lengths in LENGTHS:
            run(cell, D, dtype, lengths)

if torch.cuda.get_device_capability() == (9, 0):
    for cell in CELLS:  # heads over a thread-block cluster: forward and backward
        for lengths in LENGTHS:
            run(cell, 256, torch.bfloat16, lengths, label="cluster")
    for cell in ("lstm", "gru"):  # D = 768: R partly in shared memory (forward only)
        for lengths in LENGTHS:
            run(cell, 768, torch.bfloat16, lengths, NH=1, grad=False, label="cluster streamed")

for lengths in LENGTHS:  # a cooperative grid of 128 CTAs
    run("lstm", 2048, torch.bfloat16, lengths, NH=1, label="grid")
facts = planner.device_facts(torch.cuda.current_device())
facts = dataclasses.replace(facts, limits=dataclasses.replace(facts.limits, max_cluster=1))
planner.device_facts = lambda index: facts
for cell in CELLS:
    for lengths in LENGTHS:
        run(cell, 256, torch.bfloat16, lengths, label="grid")
