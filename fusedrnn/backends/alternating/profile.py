"""Where the alternating backend's time goes, on a CUDA GPU: whole calls and each per-step component alone.

    python -m fusedrnn.backends.alternating.profile --cell lstm --heads 1x768 --batch 16 --steps 1024

Times (CUDA events, median of --reps after warm-up): the forward without and with saving, forward +
backward, dR alone, and CUDA graphs of T forward GEMMs, T forward pointwise kernels, T backward pointwise
kernels and T backward GEMMs alone (also as torch.mm where NH = 1, to compare cuBLAS's choices).
``--device cpu`` (under TRITON_INTERPRET=1) runs the same code without graphs, for tests of this script.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fusedrnn
from fusedrnn import get_cell

from . import launch
from .kernels import backward_step_kernel, forward_step_kernel


def _time(fn, reps: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) * 1000 / reps
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _graphed(loop, device: torch.device):
    """A CUDA graph of ``loop`` (run once eagerly first), as a callable that replays it (on the CPU: loop)."""
    if device.type != "cuda":
        return loop
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        loop()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loop()
    return graph.replay


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--heads", default="1x768", help="NHxD")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())

    dtype = getattr(torch, args.dtype)
    B, T = args.batch, args.steps
    NH, D = (int(v) for v in args.heads.split("x"))
    spec = get_cell(args.cell)
    x = torch.randn(B, T, spec.num_gates_x, NH, D, device=device, dtype=dtype, requires_grad=True)
    R = (torch.randn(spec.num_gates_r, NH, D, D, device=device) / D**0.5).to(dtype).requires_grad_()
    b = torch.randn(spec.num_gates_b, NH, D, device=device, dtype=dtype, requires_grad=True)
    rows = []

    def report(name, ms):
        rows.append((name, ms))
        print(f"{name:44s} {ms:9.3f} ms  {1000 * ms / T:8.2f} us/step", flush=True)

    def fw():
        with torch.no_grad():
            fusedrnn.rnn(x, R, b, cell=args.cell, backend="alternating")

    def fw_save():
        fusedrnn.rnn(x, R, b, cell=args.cell, backend="alternating")

    def fwbw():
        x.grad = R.grad = b.grad = None
        y, _ = fusedrnn.rnn(x, R, b, cell=args.cell, backend="alternating")
        y.sum().backward()

    report("forward, no grad (call)", _time(fw, args.reps, device))
    report("forward, saving for backward (call)", _time(fw_save, args.reps, device))
    report("forward + backward (calls)", _time(fwbw, args.reps, device))

    # the plans those calls built: their static buffers, tables (still pointing at live tensors: re-set below)
    plans = launch.cached_plans()
    key = (args.cell, B, T, NH, D, dtype, device)
    fw_plan = next(p for k, p in plans.items() if k[0] == "fw" and k[1:8] == key and not k[8])
    bw_plan = next(p for k, p in plans.items() if k[0] == "bw" and k[1:8] == key)
    with torch.no_grad():
        state = torch.zeros(spec.num_states, B, NH, D, device=device, dtype=dtype)
        y, final, pre, states = launch.forward(args.cell, x, R, b, state, True)
        dy = torch.ones_like(y)
        dx, db, dr, _ = launch.backward_steps(args.cell, R, pre, states, dy, torch.zeros_like(final))
    report("dR (weight_gradient)", _time(lambda: launch.weight_gradient(dr, states, dtype), args.reps, device))

    N = B * NH * D
    fw_gemm = lambda: [torch.bmm(fw_plan.hbuf, fw_plan.Wt, out=fw_plan.gates) for _ in range(T)]  # noqa: E731
    report("forward GEMMs alone (graph of T bmm)", _time(_graphed(fw_gemm, device), args.reps, device))
    if NH == 1:
        mm = lambda: [torch.mm(fw_plan.hbuf[0], fw_plan.Wt[0], out=fw_plan.gates[0]) for _ in range(T)]  # noqa: E731
        report("forward GEMMs alone (graph of T mm)", _time(_graphed(mm, device), args.reps, device))
    launch._set_table(fw_plan.table, (x.detach(), y, y, y))

    def fw_pointwise():
        for t in range(T):
            forward_step_kernel[fw_plan.grid](
                fw_plan.table, fw_plan.gates, fw_plan.bias, fw_plan.carry, fw_plan.hbuf, t, N, B, T, NH, D,
                **fw_plan.consts, SAVE=False, FAST=fw_plan.fast, BLOCK=launch.BLOCK, num_warps=launch.NUM_WARPS,
            )

    report("forward pointwise kernels alone (graph)", _time(_graphed(fw_pointwise, device), args.reps, device))
    launch._set_table(bw_plan.table, (pre, states, dy, dx, dr))

    def bw_pointwise():
        for t in range(T - 1, -1, -1):
            backward_step_kernel[bw_plan.grid](
                bw_plan.table, bw_plan.dh_rec, bw_plan.dcarry, bw_plan.dpg, bw_plan.db_acc, t, N, B, T, NH, D,
                **bw_plan.consts, FAST=bw_plan.fast, BLOCK=launch.BLOCK, num_warps=launch.NUM_WARPS,
            )

    report("backward pointwise kernels alone (graph)", _time(_graphed(bw_pointwise, device), args.reps, device))
    bw_gemm = lambda: [torch.bmm(bw_plan.dpg, bw_plan.W, out=bw_plan.dh_rec) for _ in range(T)]  # noqa: E731
    report("backward GEMMs alone (graph of T bmm)", _time(_graphed(bw_gemm, device), args.reps, device))
    if NH == 1:
        mm = lambda: [torch.mm(bw_plan.dpg[0], bw_plan.W[0], out=bw_plan.dh_rec[0]) for _ in range(T)]  # noqa: E731
        report("backward GEMMs alone (graph of T mm)", _time(_graphed(mm, device), args.reps, device))
    return rows


if __name__ == "__main__":
    main()
