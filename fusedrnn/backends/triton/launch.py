"""Host side of the Triton backend: tiling and launches (the autograd Function: ..fused.fused_backend).

Saved for backward (float32): the pre-activation slots [T, B, Gb, NH, D] and the states before every
step [S, NH, T + 1, B, D] — (Gb + S) * 4 bytes per (batch, step, hidden unit), e.g. 24 B for LSTM:
B = 16, T = 1024, H = 768 keeps 302 MB. Backward recomputes nothing but the cell's pointwise functions.
The backward kernel writes the slot gradients once in the input dtype (dx is a view of them) and sums
db per batch tile in registers; dR = Σ_t dgate_tᵀ h_{t-1} is a second kernel, split over chunks of rows
so that it fills the GPU (its output is tiny, its reduction long). dR is thus reduced from the same
rounded gate gradients that the recurrent MMA uses. Deterministic: no atomics, fixed summation orders.
"""

from __future__ import annotations

import torch
import triton

from ...cells import get_cell
from ..fused import dx_of, empty, sm_count
from .cells import CELL_IDS
from .kernels import rnn_backward_kernel, rnn_forward_kernel, weight_grad_kernel

MAX_HEAD_DIM = 128
# R stays on chip (registers / shared memory) for the whole sequence. 192 KB is what compiled on an H100
# (227 KB of shared memory per block): GRU float32 D = 128 (192 KB) runs, LSTM float32 D = 128 (256 KB)
# asked Triton for 264 KB of shared memory and failed to launch.
MAX_R_BYTES = 192 * 1024
_MIN_TILE = 16  # tl.dot needs every dimension >= 16


def r_bytes(num_gates_r: int, head_dim: int, dtype: torch.dtype) -> int:
    """Bytes of one head's R as the kernels hold it (padded to a power-of-two head size)."""
    block_d = max(_MIN_TILE, triton.next_power_of_2(head_dim))
    return num_gates_r * block_d * block_d * dtype.itemsize


def tiling(batch: int, num_heads: int, head_dim: int, device: torch.device) -> dict[str, int]:
    """Batch tile, padded head size and warps for one call.

    A step's latency barely grows with the batch tile (the MMAs are tiny), so the tile is the smallest
    (16, the MMA minimum) unless the grid would need more than one wave of programs; then it grows
    until (heads x batch tiles) fits on the SMs, up to 64 rows.
    """
    block_d = max(_MIN_TILE, triton.next_power_of_2(head_dim))
    sms = sm_count(device.index or 0) if device.type == "cuda" else 1 << 30
    block_b = _MIN_TILE
    while block_b < 64 and block_b < batch and num_heads * triton.cdiv(batch, block_b) > sms:
        block_b *= 2
    # 8 warps: measured fastest on an H100 for LSTM / sLSTM at D = 64 and 128, forward and backward
    # (LSTM 12x64: 0.91 ms vs 1.11 ms with 4 and 2.12 ms with 2); within 10 % for Elman. Tiles of
    # 16 x 32 and smaller have too few elements to share among 8 warps.
    num_warps = 8 if block_b * block_d >= 16 * 64 else 4
    return {"BLOCK_B": block_b, "BLOCK_D": block_d, "num_warps": num_warps}


def fast_math(dtype: torch.dtype, device: torch.device) -> bool:
    """Approximate σ / tanh for 16-bit inputs on GPUs (the interpreter cannot run inline PTX)."""
    return dtype in (torch.bfloat16, torch.float16) and device.type == "cuda"


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs use TF32 tensor cores only where torch allows TF32 matmuls (it does not by default)."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def cell_constants(cell_name: str, with_x: bool) -> dict[str, int]:
    """The kernels' compile-time description of a cell: id, gate and state counts, slot routing."""
    cell = get_cell(cell_name)
    rs = tuple(cell.r_slots) + (0,) * (4 - cell.num_gates_r)  # unused gates: any slot, never read
    consts = {"CELL": CELL_IDS[cell.name], "GR": cell.num_gates_r, "GB": cell.num_gates_b, "S": cell.num_states}
    consts.update({f"RS{g}": rs[g] for g in range(4)})
    if with_x:
        xs = tuple(cell.x_slots) + (0,) * (4 - cell.num_gates_x)
        consts["GX"] = cell.num_gates_x
        consts.update({f"XS{g}": xs[g] for g in range(4)})
    return consts


def initial_constants(cell_name: str) -> dict[str, float]:
    """INIT0..INIT3: the cell's initial state values (``Cell.initial``; unused states 0), what a reset restores."""
    initial = tuple(get_cell(cell_name).initial) + (0.0,) * (4 - get_cell(cell_name).num_states)
    return {f"INIT{s}": float(value) for s, value in enumerate(initial)}


def forward(cell_name: str, x, R, b, state, lengths, save: bool, num_warps: int | None = None, resets=None):
    """y, final (input dtype) and, when saving, pre and states (float32). lengths: int32 [B] or None; resets:
    bool [B, T] or None."""
    B, T, _, NH, D = x.shape
    consts = cell_constants(cell_name, with_x=True)
    GB, S = consts["GB"], consts["S"]
    y = empty(B, T, NH, D, dtype=x.dtype, device=x.device)
    final = empty(S, B, NH, D, dtype=x.dtype, device=x.device)
    pre: torch.Tensor | None
    states: torch.Tensor | None
    if save:
        pre = empty(T, B, GB, NH, D, dtype=torch.float32, device=x.device)
        states = empty(S, NH, T + 1, B, D, dtype=torch.float32, device=x.device)
    else:
        pre = states = None
    tile = tiling(B, NH, D, x.device)
    grid = (NH, triton.cdiv(B, tile["BLOCK_B"]))
    rnn_forward_kernel[grid](
        x,
        R,
        b,
        state,
        x if lengths is None else lengths,
        x if resets is None else resets,
        y,
        final,
        y if pre is None else pre,
        y if states is None else states,
        B,
        T,
        NH,
        D,
        **consts,
        BLOCK_B=tile["BLOCK_B"],
        BLOCK_D=tile["BLOCK_D"],
        SAVE=save,
        DOT_PRECISION=dot_precision(x.dtype),
        FAST=fast_math(x.dtype, x.device),
        HAS_LENGTHS=lengths is not None,
        HAS_RESETS=resets is not None,
        **initial_constants(cell_name),
        num_warps=num_warps or tile["num_warps"],
    )
    return y, final, pre, states


def backward_kernel(cell_name: str, R, pre, states, lengths, dy, dfinal, num_warps: int | None = None, resets=None):
    """The recurrent part: slot gradients dgate [B, T, Gb, NH, D] and db (input dtype), d state0 (float32)."""
    S, NH, T1, B, D = states.shape
    T = T1 - 1
    consts = cell_constants(cell_name, with_x=False)
    tile = tiling(B, NH, D, R.device)
    grid = (NH, triton.cdiv(B, tile["BLOCK_B"]))
    dgate = empty(B, T, consts["GB"], NH, D, dtype=R.dtype, device=R.device)
    db_part = empty(grid[1], consts["GB"], NH, D, dtype=torch.float32, device=R.device)
    dstate0 = empty(S, B, NH, D, dtype=torch.float32, device=R.device)
    rnn_backward_kernel[grid](
        R,
        pre,
        states,
        dy if lengths is None else lengths,
        dy if resets is None else resets,
        dy,
        dfinal,
        dgate,
        db_part,
        dstate0,
        B,
        T,
        NH,
        D,
        **consts,
        BLOCK_B=tile["BLOCK_B"],
        BLOCK_D=tile["BLOCK_D"],
        DOT_PRECISION=dot_precision(R.dtype),
        FAST=fast_math(R.dtype, R.device),
        HAS_LENGTHS=lengths is not None,
        HAS_RESETS=resets is not None,
        num_warps=num_warps or tile["num_warps"],
    )
    return dgate, db_part.sum(dim=0).to(R.dtype), dstate0


_WEIGHT_GRAD_ROWS = 64  # rows of (b, t) per tl.dot in weight_grad_kernel


def weight_gradient(cell_name: str, dgate, states):
    """dR [Gr, NH, D, D] in dgate's dtype from the slot gradients and the saved states.

    Operands in the input dtype (the rounded values the recurrent MMAs used), float32 sums; float32
    inputs follow torch's TF32 setting.
    """
    consts = cell_constants(cell_name, with_x=False)
    B, T, GB, NH, D = dgate.shape
    GR, rows = consts["GR"], B * T
    block_d = max(_MIN_TILE, triton.next_power_of_2(D))
    sms = sm_count(dgate.device.index or 0) if dgate.device.type == "cuda" else 1
    chunks = max(1, min(triton.cdiv(2 * sms, GR * NH), triton.cdiv(rows, _WEIGHT_GRAD_ROWS)))
    rows_per_chunk = triton.cdiv(triton.cdiv(rows, chunks), _WEIGHT_GRAD_ROWS) * _WEIGHT_GRAD_ROWS
    chunks = triton.cdiv(rows, rows_per_chunk)
    part = empty(chunks, GR, NH, D, D, dtype=torch.float32, device=dgate.device)
    dtype = dgate.dtype
    weight_grad_kernel[(GR, NH, chunks)](
        dgate,
        states,
        part,
        NH,
        T,
        B,
        GB,
        states.stride(1),
        rows_per_chunk,
        D,
        RS0=consts["RS0"],
        RS1=consts["RS1"],
        RS2=consts["RS2"],
        RS3=consts["RS3"],
        BLOCK_R=_WEIGHT_GRAD_ROWS,
        BLOCK_D=block_d,
        DOT_PRECISION=dot_precision(dtype),
        num_warps=8 if block_d >= 64 else 4,
        num_stages=3,
    )
    return part.sum(dim=0).to(dtype)


def backward(cell_name: str, R, pre, states, lengths, dy, dfinal, num_warps: int | None = None, resets=None):
    """dx [B, T, Gx, NH, D], dR [Gr, NH, D, D], db [Gb, NH, D] (input dtype) and d state0 (float32)."""
    dgate, db, dstate0 = backward_kernel(cell_name, R, pre, states, lengths, dy, dfinal, num_warps, resets)
    return dx_of(cell_name, dgate), weight_gradient(cell_name, dgate, states), db, dstate0
