"""The CUDA resource model's calibration table: every constant the model (model.py) takes from a measurement, with
its value, the kernel family it belongs to, what measured it and the toolchain it was measured with.

Register overheads are read from ptxas' reports (``python -m fusedrnn info --compile-all``, which also checks the
result: no shipped variant spills); the step-time weights of the split-K and grid objectives are fitted on the
sweeps in benchmarks/ (split_sweep.py, grid_sweep.py), whose results are in docs/large_heads.md and
docs/journal/. Change a value only with the evidence for the new one, and run compile-all for sm_80 and sm_90a.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Calibration", "CALIBRATION", "value", "per_cell"]


@dataclasses.dataclass(frozen=True)
class Calibration:
    value: object
    family: str  # the kernel family (cta, transposed, cluster, split_k, grid) or "all"
    evidence: str
    toolchain: str


_PTXAS = "NVRTC 13.5, sm_80 and sm_90a"

CALIBRATION: dict[str, Calibration] = {
    # registers per thread beyond what the model counts per element
    "FW_OVERHEAD": Calibration(
        16, "cta", "forward_cta: the smallest value that rejects every variant that spilled", _PTXAS
    ),
    "FW_T_OVERHEAD": Calibration(24, "transposed", "forward_transposed: as FW_OVERHEAD", _PTXAS),
    "FW_C_OVERHEAD": Calibration(
        24,
        "cluster",
        "forward_cluster beyond FW_T_OVERHEAD (rank, mbarriers, the exchange's addresses): the first "
        "compile-all of the cluster variants spilled up to 22 registers past the model's count (Elman D = 384, "
        "12 warps: model 147, spilled at 168)",
        "NVRTC 13.5, sm_90a",
    ),
    "FW_S_OVERHEAD": Calibration(
        {"lstm": -21, "slstm": -21, "gru": 16, "elman": 26},
        "cluster",
        "forward_cluster with KSM > 0 K steps of R in shared memory, per cell, added to the above: the smallest KSM "
        "that does not spill (bf16; every cell, D = 384 / 512 / 768, clusters of 8 and 16, 8 and 16 rows), e.g. "
        "LSTM D = 512 8 rows: KSM = 12 fits (160 registers of R), 10 spills; GRU's zero half fragments take "
        "registers too (an MMA operand is a register quad)",
        "NVRTC 13.5, sm_90a",
    ),
    "BW_OVERHEAD": Calibration(
        56, "cta", "backward_cta: the smallest value that rejects every variant that spilled", _PTXAS
    ),
    "BW_C_OVERHEAD": Calibration(
        72,
        "cluster",
        "backward_cluster beyond its counted registers: BW_OVERHEAD's addresses and loop state plus the exchange's",
        "NVRTC 13.5, sm_90a",
    ),
    "BW_CELL_OVERHEAD": Calibration(
        {"gru": 44, "elman": 4},
        "cta",
        "per cell, backward_cta (cells not listed: 0): GRU's D = 128 variant used all 255 registers and spilled 4 "
        "bytes where the model said 212 (NVRTC 13.0); Elman's float32 D = 128 16-row variant spilled 20 bytes at "
        "255 where the model said 252 (since TileCopy holds a pointer per chunk)",
        "NVRTC 13.0 and 13.5",
    ),
    "BW_T_CELL_OVERHEAD": Calibration(
        {"gru": 44}, "transposed", "per cell, backward_transposed (cells not listed: 0): as BW_CELL_OVERHEAD", _PTXAS
    ),
    "FW_T_CELL_OVERHEAD": Calibration(
        {"gru": 8},
        "transposed",
        "per cell, forward_transposed (cells not listed: 0): "
        "GRU's D = 128 8-row variant (16 warps, 128 registers) spilled 4 bytes on "
        "sm_80 where the model said 122",
        _PTXAS,
    ),
    "BW_T_OVERHEAD": Calibration(0, "transposed", "backward_transposed beyond the backward's overheads", _PTXAS),
    "DTYPE_OVERHEAD": Calibration(
        {"float32": {"forward": 124, "backward": 84}, "float16": {"forward": 28, "backward": 0}},
        "cta",
        "per input dtype (bfloat16: 0): float32 splits operands for TF32 and runs IEEE sigmoid / tanh / exp; float16 "
        "converts per element",
        _PTXAS,
    ),
    "DTYPE_T_OVERHEAD": Calibration(
        {"float32": 128, "float16": 0}, "transposed", "forward_transposed per input dtype: as DTYPE_OVERHEAD", _PTXAS
    ),
    "GRID_OVERHEAD": Calibration(
        {"forward": 48, "backward": 92},
        "grid",
        "forward_grid / backward_grid beyond the counted registers (addresses, loop state, the cell's "
        "temporaries); the backward's is large: ptxas hoists the loads of R's register part in the prologue, and "
        "LSTM D = 1024 with 31 or 32 of its 32 K steps in registers spilled 8 bytes there on sm_80, 30 did not",
        _PTXAS,
    ),
    "SPLIT_OVERHEAD": Calibration(
        37,
        "split_k",
        "forward_split_k beyond the counted registers (bf16; every cell at D = 384 / 512 / 768, "
        "clusters of 8 and 16, 8 and 12 warps, each tiling with the most K steps of R in registers that compile "
        "without spilling): the smallest value that rejects every tiling seen to spill, one K step more than its "
        "most (e.g. LSTM D = 768 over 16 CTAs, 12 x 1 warps, 25 of 48), and LSTM D = 768 over 16 CTAs, 4 x 2 "
        "warps with 14 of 24 (15 compiles without spilling: ptxas is not monotonic)",
        "NVRTC 13.5, sm_90a",
    ),
    "SPLIT_NEAR_ALL": Calibration(
        32,
        "split_k",
        "added where a warp keeps all or all but one of its K steps in registers (LSTM D = 384 over 8 "
        "CTAs, 4 x 2 warps: 11 of 12 fit, all 12 spill, though the fragments in flight go)",
        "NVRTC 13.5, sm_90a",
    ),
    "SPLIT_ODD_ROWS": Calibration(
        16,
        "split_k",
        "added (with SPLIT_NEAR_ALL) where the batch rows per CTA are not a power of two: the 8-row "
        "tilings of LSTM / sLSTM D = 384 / 512 spilled 4 bytes at 3, 5, 6 and 7 rows, none at 1, 2, 4 and 8; LSTM "
        "D = 768 with kr 13 of 24 did not; the smallest value that rejects those (LSTM D = 512 with all 16 K steps "
        "in registers counts 240)",
        "NVRTC 13.5, sm_90a",
    ),
    # choices taken from timings
    "FW_T_MIN_HEAD_DIM": Calibration(
        128,
        "transposed",
        "forward_transposed from this head size on: it does half the MMA work of forward_cta at "
        "8 batch rows and none of the zero rows; 6 x 128 LSTM forward 1.06 -> 0.81 ms, but 12 x 64 GRU and Elman "
        "10-20 % slower than forward_cta, whose cell math and stores are cheaper per element (H100, bf16, B = 16)",
        "NVRTC 13.5, sm_90a",
    ),
    "SPLIT_WARPS": Calibration(
        (8, 12),
        "split_k",
        "benchmarks/split_sweep.py measured 4 and 16 warps slower "
        "everywhere (a multiple of 4: each SM scheduler gets the same MMAs)",
        "NVRTC 13.5, sm_90a (H200)",
    ),
    "SPLIT_CLUSTERS": Calibration(
        (8, 16), "split_k", "the cluster sizes benchmarks/split_sweep.py measured", "NVRTC 13.5, sm_90a (H200)"
    ),
    "SPLIT_MAX_HEAD_DIM": Calibration(
        768, "split_k", "measured up to here; wider heads keep the other kernels", "NVRTC 13.5, sm_90a (H200)"
    ),
    "SPLIT_STEP_TIME": Calibration(
        {
            "r_fragment_from_smem": 1600,
            "k_pair_per_warp": 14800,
            "cta_of_cluster": 37600,
            "unit_pair_per_thread": 351000,
            "warp": 6600,
            "partial_sum_per_gate_row_and_k_group": 276,
            "r_element_per_cta": 4,
        },
        "split_k",
        "the objective, a predicted time of 1024 steps in ns, fitted (least squares, non-negative) on "
        "benchmarks/split_sweep.py (B = 16, every cell at D = 384 / 512 / 768, 8 and 12 warps, four runs): 1.6 us "
        "per fragment of R read from shared memory, 7.4 us per K step of a warp (its chain of MMAs), 38 us per CTA "
        "of the cluster (the exchange), 351 us per unit pair of a thread's cell, 6.6 us per warp, 0.28 us per gate "
        "row and K group (the partial sums), 4.2 ns per element of the CTA's R (its MMAs)",
        "NVRTC 13.5, sm_90a (H200)",
    ),
    "GRID_STEP_TIME": Calibration(
        {
            "exchange_kb_beyond_8mb": 160,
            "exchange_bytes_per_32": 1,
            "r_fragment_from_smem": 400,
            "mma_per_warp": 1600,
            "element_per_thread": 48000,
            "warp": 6400,
        },
        "grid",
        "the objective, a predicted step time in ns / 160, fitted on benchmarks/grid_sweep.py (B = 16): the "
        "exchange is read by every CTA, so its traffic is CTAs x K x 32 bytes; about 0.2 ns per KB, and 1 ns more "
        "per KB beyond 8 MB, where L2 saturates (LSTM 1024 backward over 128 CTAs 7.8 us a step, over 64 2.95); "
        "10 ns per KB of R read from shared memory, 10 ns per MMA of a warp, 300 ns per cell element of a thread, "
        "40 ns per warp (16 warps measured slower than 8 where the MMAs per warp halve); then the most of A in "
        "flight",
        "NVRTC 13.5, sm_90a (H200)",
    ),
}


def value(name: str):
    """The calibrated value of ``name`` (a key of CALIBRATION)."""
    return CALIBRATION[name].value


def per_cell(table: dict, cell_name: str, what: str):
    """``table[cell_name]``, or a ValueError saying the cell has no calibration for ``what``."""
    found = table.get(cell_name)
    if found is None:
        raise ValueError(f"cell: {cell_name!r} has no calibrated {what} (calibration.py; calibrated: {sorted(table)})")
    return found
