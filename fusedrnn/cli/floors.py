"""The floor of a benchmark row: the least time its regime allows, shown beside the measured time.

Two bounds, the larger is the floor:

- latency: a recurrent step cannot finish before the barrier that publishes h to the next step. Per step the
  measured barrier of the structure that holds one head's R (``STEP_BARRIER_NS``): one CTA, a thread-block
  cluster of C CTAs exchanging h, or a cooperative grid. The forward takes T such steps; forward + backward 2 T.
- compute: the recurrent products at the tensor cores' dense peak (``TENSOR_PEAK_TFLOPS``): forward R·h, 2 · B · Gr
  · NH · D² FLOP per step; the backward twice that (Rᵀ·dgate and the dR GEMM). cuDNN rows get the same floor:
  their input projection is outside the recurrence's floor (and outside fusedrnn's time).

The structure a head needs is the ``cuda`` backend's plan where the device can answer (a GPU with cuda-core),
else estimated from D (one CTA to 128, a cluster of 16 to 768, a grid beyond).
"""

from __future__ import annotations

import torch

from ..cells import get_cell

__all__ = ["STEP_BARRIER_NS", "TENSOR_PEAK_TFLOPS", "floor"]

# ns per step of the barrier alone, H100 SXM, each CTA publishing its share of h (DESIGN.md's table and
# docs/large_heads.md: benchmarks/cluster_exchange.py, the mbarrier exchange of 192 bytes per CTA)
STEP_BARRIER_NS: dict[str, float | dict[int, float]] = {
    "cta": 43,  # two __syncthreads in one CTA
    "cluster": {2: 333, 4: 347, 8: 363, 16: 454},  # CTAs per cluster: asynchronous stores + mbarrier wait
    "grid": 1100,  # cooperative grid.sync(), 16 to 132 CTAs
}
# dense 16-bit tensor-core peak by device name (NVIDIA data sheets: H100 / H200 SXM 989, A100 312); float32 inputs
# (no TF32) run on CUDA cores and get no compute floor here
TENSOR_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _structure(cell: str, NH: int, D: int, B: int, dtype: torch.dtype, device: torch.device, kind: str):
    """("cta" | "cluster" | "grid", CTAs per head) of the kernel ``kind`` that runs one head."""
    if device.type == "cuda":
        try:
            from ..backends.cuda import cuda_core_available
            from ..backends.cuda.planner import device_facts, plan_kernel

            if cuda_core_available() is None:
                v = plan_kernel(kind, cell, D, dtype, B, NH, device_facts(device.index or 0))
                if not isinstance(v, str):
                    if v.shape.cooperative:
                        return "grid", v.shape.ctas_per_head
                    if v.shape.cluster_size > 1:
                        return "cluster", v.shape.cluster_size
                    return "cta", 1
        except Exception:  # no plan: the estimate below
            pass
    if D <= 128:
        return "cta", 1
    if D <= 768:
        return "cluster", 16
    return "grid", 0


def _barrier_ns(structure: str, ctas: int) -> float:
    table = STEP_BARRIER_NS[structure]
    if isinstance(table, dict):
        fitting = [n for n in sorted(table) if n >= ctas]
        return table[fitting[0] if fitting else max(table)]
    return float(table)


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in TENSOR_PEAK_TFLOPS.items() if key in name), None)


def floor(
    cell: str, NH: int, D: int, B: int, T: int, mode: str, dtype: torch.dtype, device: torch.device
) -> dict[str, object]:
    """floor_ms (the larger bound), floor_latency_ms, floor_compute_ms (None without a known peak) and
    floor_basis (the structure and numbers used) of one row."""
    spec = get_cell(cell)
    kinds = ["forward"] + (["backward"] if mode == "fwbw" else [])
    latency_ns, basis = 0.0, []
    for kind in kinds:
        structure, ctas = _structure(cell, NH, D, B, dtype, device, kind)
        per_step = _barrier_ns(structure, ctas)
        latency_ns += T * per_step
        basis.append(f"{kind} {structure}{f' of {ctas}' if structure == 'cluster' else ''}: {per_step:g} ns/step")
    flop = 2.0 * B * T * spec.num_gates_r * NH * D * D * (3 if mode == "fwbw" else 1)
    peak = _peak_tflops(device) if dtype in (torch.bfloat16, torch.float16) else None
    compute_ms = None if peak is None else flop / (peak * 1e12) * 1e3
    latency_ms = latency_ns * 1e-6
    if compute_ms is not None:
        basis.append(f"{flop / 1e9:.3g} GFLOP at {peak:g} TFLOP/s")
    return {
        "floor_ms": round(max(latency_ms, compute_ms or 0.0), 5),
        "floor_latency_ms": round(latency_ms, 5),
        "floor_compute_ms": None if compute_ms is None else round(compute_ms, 5),
        "floor_basis": "; ".join(basis),
    }
