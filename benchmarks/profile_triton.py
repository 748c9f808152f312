"""Where the Triton backend's time goes: forward with and without saving, backward kernel, the dR / db
reductions, for a sweep of warps per program.

    python benchmarks/profile_triton.py --cell lstm --heads 12x64
"""

import argparse

import torch
from bench_backends import time_cuda  # noqa: I001  (run from benchmarks/ or with it on sys.path)

from fusedrnn import get_cell
from fusedrnn.backends.triton import launch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", nargs="+", default=["lstm"])
    parser.add_argument("--heads", nargs="+", default=["12x64"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--warps", nargs="+", type=int, default=[2, 4, 8])
    args = parser.parse_args()
    B, T, dt = args.batch, args.steps, torch.bfloat16
    for cell in args.cells:
        spec = get_cell(cell)
        for heads in args.heads:
            NH, D = (int(v) for v in heads.split("x"))
            x = torch.randn(B, T, spec.num_gates_x, NH, D, device="cuda", dtype=dt)
            R = (torch.randn(spec.num_gates_r, NH, D, D, device="cuda") / D**0.5).to(dt)
            b = torch.randn(spec.num_gates_b, NH, D, device="cuda", dtype=dt)
            s0 = torch.zeros(spec.num_states, B, NH, D, device="cuda", dtype=dt)
            for w in args.warps:
                fw = time_cuda(lambda: launch.forward(cell, x, R, b, s0, None, False, num_warps=w), 10, 2)
                fws = time_cuda(lambda: launch.forward(cell, x, R, b, s0, None, True, num_warps=w), 10, 2)
                _, _, pre, states = launch.forward(cell, x, R, b, s0, None, True)
                dy = torch.randn(B, T, NH, D, device="cuda", dtype=dt)
                dfin = torch.randn_like(s0)
                bw = time_cuda(lambda: launch.backward_kernel(cell, R, pre, states, None, dy, dfin, num_warps=w), 10, 2)
                print(
                    f"{cell:6s} {heads:6s} warps {w}: fw {fw:.3f}  fw+save {fws:.3f}  bw kernel {bw:.3f} ms", flush=True
                )
            dgate = launch.backward_kernel(cell, R, pre, states, None, dy, dfin)[0]
            wg = time_cuda(lambda: launch.weight_gradient(cell, dgate, states), 10, 2)
            print(f"{cell:6s} {heads:6s} dR GEMM {wg:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
