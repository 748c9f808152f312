"""How far each implementation of a 16-bit RNN is from float64 math, on flashrnn's own test inputs.

flashrnn's tests (one head of 512, T = 1024) compare a fused backend with the vanilla one in the same dtype under
``torch.allclose``. Over a thousand steps of a near-chaotic recurrence (R = randn / sqrt(D), biases randn) two
correct 16-bit implementations may drift apart; this script tells a kernel defect from that drift by measuring
every path against the float64 function of the same (16-bit) inputs:

- ``cuda`` / ``alternating``: fusedrnn's backends in the input dtype;
- ``reference``: fusedrnn's reference on the 16-bit inputs (float32 math: flashrnn's ``vanilla`` through
  ``fusedrnn.compat``);
- ``emulated``: float64 math with h rounded to the input dtype where it enters R·h (what any 16-bit tensor-core
  kernel computes at best: its MMA operands are 16-bit);
- ``flashrnn-cuda_fused`` / ``flashrnn-vanilla``: the published flashrnn package's fused CUDA backend and its
  vanilla backend in the input dtype (LSTM and Elman; flashrnn has no fused GRU), where it is installed and builds.

Quantities: y = h at every step, the final states, and the gradients of <y, w> (w randn, as flashrnn's test)
for x, R and b. Errors: normwise ‖a − e‖ / ‖e‖ and whether flashrnn's tolerance (``torch.allclose``: atol 0.2,
rtol 0.4 for bfloat16; 0.1, 0.2 for float16) holds against float64 and against fusedrnn's reference.

    python benchmarks/accuracy_float64.py --out accuracy.jsonl            # the 12 cases, all paths on a GPU
    python benchmarks/accuracy_float64.py --table accuracy.jsonl          # BENCHMARKS.md's table of them
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from fusedrnn import get_cell, rnn
from fusedrnn.backends.reference import reference_rnn

# flashrnn's own tolerances in its tests (tests/test_*.py of the flashrnn repository)
FLASHRNN_TOL = {torch.bfloat16: {"atol": 0.2, "rtol": 0.4}, torch.float16: {"atol": 0.1, "rtol": 0.2}}
# the cases of flashrnn's suite (one head of 512, T = 1024) that fusedrnn's fused path failed against its vanilla
CASES = [(cell, torch.bfloat16, B) for cell in ("elman", "gru", "lstm") for B in (8, 32, 64)]
CASES += [("elman", torch.float16, B) for B in (8, 32, 64)]
QUANTITIES = ("y", "final", "dx", "dR", "db")


def flashrnn_inputs(cell: str, B: int, T: int, NH: int, D: int, dtype: torch.dtype, device: str):
    """flashrnn's ``create_inputs``: x randn, R randn / sqrt(D), b randn, zero states (fusedrnn's layout)."""
    spec = get_cell(cell)
    x = torch.randn(B, T, spec.num_gates_x, NH, D, device=device, dtype=dtype)
    R = (torch.randn(spec.num_gates_r, NH, D, D, device=device, dtype=dtype) / D**0.5).to(dtype)
    b = torch.randn(spec.num_gates_b, NH, D, device=device, dtype=dtype)
    state = torch.zeros(spec.num_states, B, NH, D, device=device, dtype=dtype)
    return x, R, b, state


def with_grads(fn, inputs, w):
    """(y, final, dx, dR, db) of fn, gradients of <y, w>."""
    leaves = [t.detach().clone().requires_grad_(i < 3) for i, t in enumerate(inputs)]
    y, final = fn(*leaves)
    grads = torch.autograd.grad((y.double() * w).sum(), leaves[:3])
    return [t.detach().double() for t in (y, final, *grads)]


def fusedrnn_path(cell: str, backend: str):
    return lambda x, R, b, state: rnn(x, R, b, state, cell=cell, backend=backend)


def emulated_path(cell: str, dtype: torch.dtype):
    spec = get_cell(cell)
    return lambda x, R, b, state: reference_rnn(
        spec, x.double(), R.double(), b.double(), state.double(), operand_dtype=dtype
    )


def flashrnn_path(cell: str, backend: str, dtype: torch.dtype):
    """flashrnn's own call (LSTM / Elman: its layouts and gate orders are fusedrnn's), or None if unavailable."""
    try:
        from flashrnn import flashrnn
    except ImportError:
        return None
    _patch_flashrnn_gpu_info()
    name = str(dtype).removeprefix("torch.")

    def run(x, R, b, state):
        all_states, last = flashrnn(x, R, b, state.unsqueeze(2), function=cell, backend=backend, dtype=name)
        return all_states[0], last[:, :, 0]

    return run


def _patch_flashrnn_gpu_info() -> None:
    """flashrnn 1.0.8 reads the device through a C++ helper that does not build with CUDA 13 (it reads
    cudaDeviceProp fields CUDA 13 removed); give it the four values it uses from torch instead."""
    module = sys.modules["flashrnn.flashrnn.flashrnn"]  # not ``import ... as``: the package's attribute is the function

    def gpu_info(device_id: int) -> dict:
        p = torch.cuda.get_device_properties(device_id)
        return {
            "maxThreadsPerBlock": 1024,
            "regsPerMultiprocessor": 65536,
            "multiProcessorCount": p.multi_processor_count,
            "sharedMemPerBlockOptin": getattr(p, "shared_memory_per_block_optin", 232448),
        }

    module.get_gpu_info = gpu_info


def errors(got, ref, dtype, vanilla=None) -> dict:
    out = {}
    for name, a, e in zip(QUANTITIES, got, ref):
        out[name] = {
            "norm": ((a - e).norm() / e.norm().clamp_min(1e-30)).item(),
            "max_abs": (a - e).abs().max().item(),
            "allclose_f64": bool(torch.allclose(a, e, **FLASHRNN_TOL[dtype])),
        }
    if vanilla is not None:
        for name, a, v in zip(QUANTITIES, got, vanilla):
            out[name]["allclose_vanilla"] = bool(torch.allclose(a, v, **FLASHRNN_TOL[dtype]))
    return out


def table(rows: list[dict]) -> str:
    """BENCHMARKS.md's table: per case and path, ‖error‖ / ‖float64‖ of y, dx, dR, db (× 1e-3), and whether
    flashrnn's tolerance holds against float64 ("f64") and against fusedrnn's reference ("ref")."""
    lines = [
        "| cell | dtype | B | path | y | dx | dR | db | flashrnn's tolerance vs f64 / vs ref |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['cell']} | {r['dtype'].removeprefix('torch.')} | {r['B']} | {r['path']} |"
        if "error" in r:
            lines.append(f"{head} {r['error'][:60]} | | | | |")
            continue
        norms = " | ".join(f"{r[q]['norm'] * 1e3:.2f}" for q in ("y", "dx", "dR", "db"))
        fails = [q for q in QUANTITIES if not r[q]["allclose_f64"]]
        fails_ref = [q for q in QUANTITIES if not r[q].get("allclose_vanilla", True)]
        verdict = f"{'pass' if not fails else 'fails ' + ', '.join(fails)} / " + (
            "pass" if not fails_ref else "fails " + ", ".join(fails_ref)
        )
        lines.append(f"{head} {norms} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="append one JSON line per (case, path)")
    parser.add_argument(
        "--table", default=None, metavar="JSONL", help="print BENCHMARKS.md's table of a run's rows and exit"
    )
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--head-dim", type=int, default=512)
    parser.add_argument(
        "--flashrnn-batches",
        default="8",
        help="batch sizes at which to build flashrnn's "
        "cuda_fused (each a separate nvcc build of ~1 min), comma-separated, or 'none'",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.table:
        with open(args.table) as rows:
            print(table([json.loads(line) for line in rows]))
        return 0
    flash_batches = set() if args.flashrnn_batches == "none" else {int(v) for v in args.flashrnn_batches.split(",")}
    out = open(args.out, "a") if args.out else None
    torch.backends.cuda.matmul.allow_tf32 = False
    for cell, dtype, B in CASES:
        torch.manual_seed(1234 + B)
        inputs = flashrnn_inputs(cell, B, args.steps, 1, args.head_dim, dtype, args.device)
        w = torch.randn(B, args.steps, 1, args.head_dim, device=args.device, dtype=torch.float64)
        f64 = with_grads(fusedrnn_path(cell, "reference"), [t.double() for t in inputs], w)
        vanilla = with_grads(fusedrnn_path(cell, "reference"), inputs, w)
        paths = {"reference": lambda: vanilla, "emulated": lambda: with_grads(emulated_path(cell, dtype), inputs, w)}
        if args.device == "cuda":
            paths["cuda"] = lambda: with_grads(fusedrnn_path(cell, "cuda"), inputs, w)
            paths["alternating"] = lambda: with_grads(fusedrnn_path(cell, "alternating"), inputs, w)
            if cell in ("lstm", "elman"):
                for backend in ("vanilla", "cuda_fused"):
                    if backend == "cuda_fused" and B not in flash_batches:
                        continue
                    fn = flashrnn_path(cell, backend, dtype)
                    if fn is not None:
                        paths[f"flashrnn-{backend}"] = lambda fn=fn: with_grads(fn, inputs, w)
        for path, compute in paths.items():
            start = time.perf_counter()
            try:
                got = compute()
            except Exception as error:  # noqa: BLE001 -- a path that cannot run is reported, the study goes on
                row = {
                    "cell": cell,
                    "dtype": str(dtype),
                    "B": B,
                    "path": path,
                    "error": f"{type(error).__name__}: {str(error)[:300]}",
                }
            else:
                row = {"cell": cell, "dtype": str(dtype), "B": B, "path": path, **errors(got, f64, dtype, vanilla)}
            row["seconds"] = round(time.perf_counter() - start, 1)
            line = json.dumps(row)
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
