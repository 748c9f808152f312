"""Where the alternating backend's time goes, on a CUDA GPU: whole calls and each per-step component alone.

    python benchmarks/profile_alternating.py --cell lstm --heads 1x768 --batch 16 --steps 1024

Times (CUDA events, median of --reps after warm-up): the forward without and with saving (the default
path, see ``launch.forward_tile``), forward + backward, the forward on the GEMM path, dR alone, and CUDA
graphs of T forward GEMMs (also as torch.mm where NH = 1, to compare cuBLAS's choices), T forward
pointwise kernels, T fused forward step kernels, T backward pointwise kernels, T backward GEMMs alone (as
the backend runs them, split over gates, and for comparison the unsplit GEMM of K = GR·D).
``--device cpu`` (under TRITON_INTERPRET=1) runs the same code without graphs, for tests of this script.
"""

from __future__ import annotations

import argparse

import torch

import fusedrnn
from fusedrnn import get_cell
from fusedrnn.backends.alternating import launch
from fusedrnn.backends.triton.launch import dot_precision
from fusedrnn.timing import median_ms


def _time(fn, reps: int, device: torch.device) -> float:
    return median_ms(fn, reps, 2, device)


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

    with torch.no_grad():
        state = torch.zeros(spec.num_states, B, NH, D, device=device, dtype=dtype)

    def fw_path(fused):
        with torch.no_grad():
            launch.forward(args.cell, x, R, b, state, None, False, fused=fused)

    report("forward, no grad (call)", _time(fw, args.reps, device))
    report("forward, saving for backward (call)", _time(fw_save, args.reps, device))
    report("forward + backward (calls)", _time(fwbw, args.reps, device))
    report("forward, no grad, GEMM path (call)", _time(lambda: fw_path(False), args.reps, device))
    fw_path(True)  # the fused path's plan, also where the default is the GEMM path

    # the plans those calls built: their static buffers, tables (still pointing at live tensors: re-set below)
    plans = launch.cached_plans()
    key = (args.cell, B, T, NH, D, dtype, device)
    fw_plans = {k[13] == "gemm": p for k, p in plans.items() if k[0] == "fw" and k[1:8] == key and not k[8]}
    fw_plan, fused_plan = fw_plans[True], fw_plans[False]
    bw_plan = next(p for k, p in plans.items() if k[0] == "bw" and k[1:8] == key)
    default = launch.forward_tile(spec.num_gates_r, B, NH, D, dtype, device)
    print(
        f"GEMM mode: {fw_plan.mode} (gates {fw_plan.gates.dtype}), L2 prefetch: {fw_plan.prefetch}, "
        f"forward path: {default or 'gemm'}",
        flush=True,
    )
    with torch.no_grad():
        y, final, pre, states = launch.forward(args.cell, x, R, b, state, None, True)
        dy = torch.ones_like(y)
        dx, db, dr, _ = launch.backward_steps(args.cell, R, pre, states, None, dy, torch.zeros_like(final))
    report("dR (weight_gradient)", _time(lambda: launch.weight_gradient(dr, states), args.reps, device))

    fw_gemm = lambda: [fw_plan.gemm() for _ in range(T)]  # noqa: E731
    report("forward GEMMs alone (graph of T bmm)", _time(_graphed(fw_gemm, device), args.reps, device))
    if NH == 1:
        mm = lambda: [torch.mm(fw_plan.h0[0], fw_plan.Wt[0], out=fw_plan.gates[0]) for _ in range(T)]  # noqa: E731
        if fw_plan.mode == "f32out":
            mm = lambda: [  # noqa: E731
                torch.mm(fw_plan.h0[0], fw_plan.Wt[0], out_dtype=torch.float32, out=fw_plan.gates[0]) for _ in range(T)
            ]
        elif fw_plan.mode == "upcast":
            mm = lambda: [
                torch.mm(fw_plan.h0[0].float(), fw_plan.Wt[0].float(), out=fw_plan.gates[0])  # noqa: E731
                for _ in range(T)
            ]
        report("forward GEMMs alone (graph of T mm)", _time(_graphed(mm, device), args.reps, device))
    launch._set_table(fw_plan.table, (x.detach(), y, y, y))
    fw_pointwise = lambda: [fw_plan.pointwise(t, save=False) for t in range(T)]  # noqa: E731
    report("forward pointwise kernels alone (graph)", _time(_graphed(fw_pointwise, device), args.reps, device))
    launch._set_table(fused_plan.table, (x.detach(), y, y, y))
    precision = dot_precision(dtype)
    fw_fused = lambda: [fused_plan.fused_step(t, precision, save=False) for t in range(T)]  # noqa: E731
    report(
        f"forward fused step kernels alone (graph), {fused_plan.tile}",
        _time(_graphed(fw_fused, device), args.reps, device),
    )
    launch._set_table(bw_plan.table, (pre, states, dy, dx, dr))
    bw_pointwise = lambda: [bw_plan.pointwise(t) for t in range(T - 1, -1, -1)]  # noqa: E731
    report("backward pointwise kernels alone (graph)", _time(_graphed(bw_pointwise, device), args.reps, device))
    bw_gemm = lambda: [bw_plan.gemm() for _ in range(T)]  # noqa: E731
    report(
        "backward GEMMs alone (graph of T bmm, K split by gate)", _time(_graphed(bw_gemm, device), args.reps, device)
    )
    # for comparison: the unsplit GEMM of K = GR·D per head, [B, GR·D] @ [GR·D, D], same GEMM mode
    dp_flat = torch.zeros(NH, B, spec.num_gates_r * D, device=device, dtype=dtype)
    dh_flat = torch.zeros(NH, B, D, device=device, dtype=bw_plan.dh_part.dtype)
    bw_unsplit = lambda: [launch._bmm(dp_flat, bw_plan.W, dh_flat, bw_plan.mode) for _ in range(T)]  # noqa: E731
    report("backward GEMMs, K unsplit (graph of T bmm)", _time(_graphed(bw_unsplit, device), args.reps, device))
    return rows


if __name__ == "__main__":
    main()
