"""Host side of the alternating backend: per-step GEMM + pointwise kernel, CUDA graphs, the autograd Function.

Per step t of the forward:
    gates = h_{t-1} @ Wᵀ           one torch.bmm over heads (cuBLAS); W[n] = R[:, n] as [GR·D, D], like the
                                   weight of an nn.Linear per head, copied from R once per call
    forward_step_kernel            adds x_t and b, applies the cell, writes y_t, h_t (the next GEMM's operand),
                                   the states carry, and what backward needs
and per step of the backward (t = T-1 .. 0):
    backward_step_kernel           dh = direct + dh_rec + dy_t; the cell's backward; writes dx_t, the R gates'
                                   slot gradients (float32 into dr for dR, input dtype into the GEMM operand
                                   dpg), the direct-gradient carry and a per-element running sum for db
    dh_rec = dpg @ W               one torch.bmm over heads: Σ_g R[g, n]ᵀ dp_g
After the loop, dR = Σ_t dr_tᵀ h_{t-1} from the same dr and saved states as the Triton backend, with its
precision policy (16-bit inputs: TF32 operands, float32 sums; float32 inputs: torch's TF32 setting) but
tiled over the D x D output so that any D fits (``weight_gradient``); db is one sum over the batch of
per-element running sums. Deterministic: no atomics, fixed summation orders.

GEMM precision: both per-step GEMMs run in the input dtype with float32 accumulation (cuBLAS) and write
the input dtype. For float32 inputs that is float32 throughout (TF32 only where torch allows TF32 matmuls:
torch.backends.cuda.matmul.allow_tf32, read when a graph is captured and part of the cache key). For
bfloat16 / float16 inputs, R·h (and Rᵀ·dp) is rounded once to the input dtype before the kernel adds it to
x and b in float32: a relative error of 2^-9 (bfloat16) / 2^-12 (float16) on that term, the size of the
rounding that h itself (the GEMM operand) and x already carry, so about √2 times the Triton backend's
forward error. It keeps the backend on torch.bmm's plain input-dtype GEMM, available in every torch >= 2.4.

Saved for backward (float32, fresh per call, the Triton backend's tensors and layouts): the pre-activation
slots [T, B, Gb, NH, D] and the states before every step [S, NH, T + 1, B, D].

CUDA graphs: the whole T-step loop (2 nodes per step: GEMM, pointwise kernel) is captured once per
(direction, cell, B, T, NH, D, dtype, device, saving, matmul precision flags) and replayed on later calls.
A plan's static buffers (GEMM operands and results, carries, bias, the address table) are overwritten by
every replay; everything returned to the caller or saved for backward is a fresh tensor of that call, whose
address reaches the kernels through the table, so no replay overwrites an earlier call's outputs and no
input or output is copied in or out. Replays are ordered on the current stream: calls that share a plan
must not run concurrently on different streams. The first call of a plan runs the loop eagerly on a side
stream (it compiles the kernels and initialises cuBLAS, and computes that call's results), then captures.
On the CPU (TRITON_INTERPRET=1), and with FUSEDRNN_ALTERNATING_GRAPHS=0, the same loop runs eagerly.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import torch
import triton

from ...cells import get_cell
from ..triton.launch import cell_constants, fast_math, sm_count
from .kernels import backward_step_kernel, forward_step_kernel, weight_grad_kernel

__all__ = ["AlternatingRNN", "forward", "backward", "backward_steps", "clear_cache", "cached_plans"]

GRAPHS_ENV = "FUSEDRNN_ALTERNATING_GRAPHS"  # "0": run the step loop eagerly on CUDA too (debugging, timing)
MAX_PLANS = 64  # cached plans (each holds its buffers and, on CUDA, one graph); least recently used go first
BLOCK = 256  # elements per program of the pointwise kernels
NUM_WARPS = 4

# Tests set this to fill every fresh output and static buffer with NaN before kernels write it, so an
# element a kernel forgets to write cannot pass as a plausible number.
POISON_OUTPUTS = False


def _empty(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(*shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if POISON_OUTPUTS and dtype.is_floating_point else out


def _use_graphs(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get(GRAPHS_ENV, "1") != "0"


def _fast(dtype: torch.dtype, device: torch.device) -> bool:
    """The Triton backend's approximate σ / tanh (tanh.approx.f32: NVIDIA, sm_75+) for 16-bit inputs."""
    if not fast_math(dtype, device) or torch.version.hip is not None:
        return False
    return torch.cuda.get_device_capability(device) >= (7, 5)


def _matmul_flags(dtype: torch.dtype, device: torch.device) -> tuple:
    """The torch settings a captured GEMM bakes in (TF32, reduced-precision split-K reductions)."""
    if device.type != "cuda":
        return ()
    m = torch.backends.cuda.matmul
    if dtype == torch.float32:
        return ("tf32", bool(m.allow_tf32))
    if dtype == torch.float16:
        return ("fp16_rr", bool(m.allow_fp16_reduced_precision_reduction))
    return ("bf16_rr", bool(m.allow_bf16_reduced_precision_reduction))


def _set_table(table: torch.Tensor, tensors) -> None:
    """Write the tensors' addresses into ``table``, ordered on the current stream after earlier replays.

    One fill per entry: no host synchronisation, no host buffer that must outlive an asynchronous copy, and
    safe inside a caller's own CUDA graph capture (the addresses become kernel arguments of the fills).
    """
    for i, tensor in enumerate(tensors):
        table[i].fill_(tensor.data_ptr())


# --- plans: static buffers, the step loop and its graph ---------------------------------------------------

# Guards the plan cache, and each call's sequence of buffer fills, table write, replay and reads (static
# buffers, W included, are shared): calls from several threads enqueue one after the other.
_LOCK = threading.RLock()
_PLANS: OrderedDict[tuple, _Plan] = OrderedDict()
# W of one (GR, NH, D, dtype, device), shared by every plan of that size (each call copies its R in first)
_WEIGHTS: weakref.WeakValueDictionary[tuple, torch.Tensor] = weakref.WeakValueDictionary()


def _weights(num_gates_r: int, NH: int, D: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (num_gates_r, NH, D, dtype, device)
    W = _WEIGHTS.get(key)
    if W is None:
        W = _empty(NH, num_gates_r * D, D, dtype=dtype, device=device)
        _WEIGHTS[key] = W
    return W


class _Plan:
    """Static buffers of one call shape and direction, the step loop over them, and its CUDA graph."""

    def __init__(self, device: torch.device):
        self.device = device
        self.graph = None
        self.replays = 0

    def steps(self) -> None:  # the T-step loop; only static buffers and the table as arguments
        raise NotImplementedError

    def run(self) -> None:
        if not _use_graphs(self.device) or torch.cuda.is_current_stream_capturing():
            self.steps()  # eagerly, or recorded into the graph that the caller is capturing
            return
        if self.graph is None:
            self._capture()  # its eager warm-up computed this call
            return
        self.graph.replay()
        self.replays += 1

    def _capture(self) -> None:
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self.steps()  # compiles the kernels, initialises cuBLAS: nothing of that may happen while capturing
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:  # thread_local: CUDA calls of other threads (e.g. a DataLoader's pinning thread) are no error
            capture = torch.cuda.graph(graph, capture_error_mode="thread_local")
        except TypeError:  # a torch without capture_error_mode
            capture = torch.cuda.graph(graph)
        with capture:
            self.steps()
        self.graph = graph


class _ForwardPlan(_Plan):
    def __init__(self, cell_name, B, T, NH, D, dtype, device, save):
        super().__init__(device)
        self.consts = cell_constants(cell_name, with_x=True)
        GR, GB, S = self.consts["GR"], self.consts["GB"], self.consts["S"]
        self.dims = (B * NH * D, B, T, NH, D)
        self.save, self.fast = save, _fast(dtype, device)
        self.W = _weights(GR, NH, D, dtype, device)  # [NH, GR·D, D]
        self.Wt = self.W.transpose(1, 2)  # [NH, D, GR·D], a view: cuBLAS reads it transposed
        self.gates = _empty(NH, B, GR * D, dtype=dtype, device=device)
        self.hbuf = _empty(NH, B, D, dtype=dtype, device=device)
        self.bias = _empty(GB, NH, D, dtype=dtype, device=device)
        self.carry = _empty(S, B, NH, D, dtype=torch.float32, device=device)
        self.table = torch.zeros(4, dtype=torch.int64, device=device)
        self.grid = (triton.cdiv(B * NH * D, BLOCK),)

    def steps(self) -> None:
        N, B, T, NH, D = self.dims
        for t in range(T):
            torch.bmm(self.hbuf, self.Wt, out=self.gates)
            forward_step_kernel[self.grid](
                self.table, self.gates, self.bias, self.carry, self.hbuf, t, N, B, T, NH, D, **self.consts,
                SAVE=self.save, FAST=self.fast, BLOCK=BLOCK, num_warps=NUM_WARPS,
            )


class _BackwardPlan(_Plan):
    def __init__(self, cell_name, B, T, NH, D, dtype, device):
        super().__init__(device)
        self.consts = cell_constants(cell_name, with_x=True)
        GR, GB, S = self.consts["GR"], self.consts["GB"], self.consts["S"]
        self.dims = (B * NH * D, B, T, NH, D)
        self.fast = _fast(dtype, device)
        self.W = _weights(GR, NH, D, dtype, device)
        self.dpg = _empty(NH, B, GR * D, dtype=dtype, device=device)
        self.dh_rec = _empty(NH, B, D, dtype=dtype, device=device)
        self.dcarry = _empty(S, B, NH, D, dtype=torch.float32, device=device)
        self.db_acc = _empty(GB, B, NH, D, dtype=torch.float32, device=device)
        self.table = torch.zeros(5, dtype=torch.int64, device=device)
        self.grid = (triton.cdiv(B * NH * D, BLOCK),)

    def steps(self) -> None:
        N, B, T, NH, D = self.dims
        for t in range(T - 1, -1, -1):
            backward_step_kernel[self.grid](
                self.table, self.dh_rec, self.dcarry, self.dpg, self.db_acc, t, N, B, T, NH, D, **self.consts,
                FAST=self.fast, BLOCK=BLOCK, num_warps=NUM_WARPS,
            )
            torch.bmm(self.dpg, self.W, out=self.dh_rec)


def _plan(kind: str, cell_name: str, B: int, T: int, NH: int, D: int, dtype, device, save: bool = True):
    key = (kind, cell_name, B, T, NH, D, dtype, device, save, _matmul_flags(dtype, device))
    with _LOCK:
        plan = _PLANS.get(key)
        if plan is None:
            if kind == "fw":
                plan = _ForwardPlan(cell_name, B, T, NH, D, dtype, device, save)
            else:
                plan = _BackwardPlan(cell_name, B, T, NH, D, dtype, device)
            _PLANS[key] = plan
            while len(_PLANS) > MAX_PLANS:
                _PLANS.popitem(last=False)
        _PLANS.move_to_end(key)
        return plan


def cached_plans() -> dict[tuple, _Plan]:
    """The cached plans by key (for tests and inspection)."""
    with _LOCK:
        return dict(_PLANS)


def clear_cache() -> None:
    """Drop every cached plan, graph and static buffer (memory returns to torch's caching allocator)."""
    with _LOCK:
        _PLANS.clear()


# --- forward / backward of one call ------------------------------------------------------------------------


class _Guard:
    """Device and autocast guards: graphs and Triton launches use the current device; autocast is off."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stack = []

    def __enter__(self):
        if self.device.type == "cuda":
            self.stack.append(torch.cuda.device(self.device))
        self.stack.append(torch.autocast(self.device.type, enabled=False))
        for context in self.stack:
            context.__enter__()
        return self

    def __exit__(self, *exc):
        for context in reversed(self.stack):
            context.__exit__(*exc)
        return False


def forward(cell_name: str, x, R, b, state, save: bool):
    """x, R, b, state contiguous. y and final (input dtype); when saving, pre and states (float32), else None."""
    B, T, _, NH, D = x.shape
    dtype, device = x.dtype, x.device
    cell = get_cell(cell_name)
    with _Guard(device), _LOCK:  # the lock: one call at a time fills and replays the shared buffers
        plan = _plan("fw", cell_name, B, T, NH, D, dtype, device, save)
        y = _empty(B, T, NH, D, dtype=dtype, device=device)
        if save:
            pre = _empty(T, B, cell.num_gates_b, NH, D, dtype=torch.float32, device=device)
            states = _empty(cell.num_states, NH, T + 1, B, D, dtype=torch.float32, device=device)
            states[:, :, 0].copy_(state.transpose(1, 2))
        else:
            pre = states = None
        plan.W.view(NH, -1, D, D).copy_(R.transpose(0, 1))
        plan.bias.copy_(b)
        plan.carry.copy_(state)
        plan.hbuf.copy_(state[0].transpose(0, 1))
        _set_table(plan.table, (x, y) + ((states, pre) if save else (y, y)))  # SAVE=False: entries 2, 3 unread
        plan.run()
        final = plan.carry.to(dtype=dtype, copy=True)
    return y, final, pre, states


def backward_steps(cell_name: str, R, pre, states, dy, dfinal):
    """The step loop: dx [B, T, Gx, NH, D], db [Gb, NH, D] (input dtype), dr [Gr, NH, T, B, D] and
    d state0 [S, B, NH, D] (float32). pre, states as saved; dy, dfinal contiguous in the input dtype."""
    S, NH, T1, B, D = states.shape
    T = T1 - 1
    dtype, device = R.dtype, R.device
    cell = get_cell(cell_name)
    with _Guard(device), _LOCK:
        plan = _plan("bw", cell_name, B, T, NH, D, dtype, device)
        dx = _empty(B, T, cell.num_gates_x, NH, D, dtype=dtype, device=device)
        dr = _empty(cell.num_gates_r, NH, T, B, D, dtype=torch.float32, device=device)
        plan.W.view(NH, -1, D, D).copy_(R.transpose(0, 1))
        plan.dcarry.copy_(dfinal)
        plan.dh_rec.zero_()
        plan.db_acc.zero_()
        _set_table(plan.table, (pre, states, dy, dx, dr))
        plan.run()
        db = plan.db_acc.sum(dim=1).to(dtype)
        dstate0 = plan.dcarry.clone()
        dstate0[0] += plan.dh_rec.transpose(0, 1)  # the GEMM of step 0 is the gradient of the initial h
    return dx, db, dr, dstate0


def _programs_wanted(device: torch.device) -> int:
    """Programs that fill the device: two per SM (one on the CPU)."""
    return 2 * sm_count(device.index or 0) if device.type == "cuda" else 1


_WG_TILE = 64  # weight_grad_kernel: output tile (BLOCK_M = BLOCK_N) and rows per tl.dot (BLOCK_R = 32)
_WG_ROWS = 32


def weight_gradient(dr, states, dtype):
    """dR [Gr, NH, D, D] in ``dtype`` from dr [Gr, NH, T, B, D] and the saved states [S, NH, T + 1, B, D].

    float32 inputs without TF32: cuBLAS float32 batched GEMMs (one per gate, over heads). Otherwise
    (16-bit inputs, or float32 where torch allows TF32): ``weight_grad_kernel``, TF32 tensor cores with
    float32 sums, split over row chunks when the output tiles alone would not fill the GPU.
    """
    GR, NH, T, B, D = dr.shape
    TB = T * B
    h_prev = states[0, :, :T].reshape(NH, TB, D)  # a view: (t, b) rows of each head are contiguous
    if dtype == torch.float32 and not (dr.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32):
        dR = torch.empty(GR, NH, D, D, dtype=torch.float32, device=dr.device)
        for g in range(GR):
            torch.bmm(dr[g].view(NH, TB, D).transpose(1, 2), h_prev, out=dR[g])
        return dR
    tiles_j = triton.cdiv(D, _WG_TILE)
    tiles = tiles_j * tiles_j
    chunks = max(1, min(triton.cdiv(_programs_wanted(dr.device), tiles * GR * NH), triton.cdiv(TB, 8 * _WG_ROWS)))
    rows_per_chunk = triton.cdiv(triton.cdiv(TB, chunks), _WG_ROWS) * _WG_ROWS
    chunks = triton.cdiv(TB, rows_per_chunk)
    part = _empty(chunks, GR, NH, D, D, dtype=torch.float32, device=dr.device)
    tf32 = dr.device.type != "cuda" or torch.cuda.get_device_capability(dr.device) >= (8, 0)
    weight_grad_kernel[(tiles, GR * NH, chunks)](
        dr, states, part, NH, TB, states.stride(1), rows_per_chunk, D, tiles_j,
        BLOCK_M=_WG_TILE, BLOCK_N=_WG_TILE, BLOCK_R=_WG_ROWS, DOT_PRECISION="tf32" if tf32 else "ieee",
        num_warps=4,
    )
    return part.sum(dim=0).to(dtype) if chunks > 1 else part[0].to(dtype)


def backward(cell_name: str, R, pre, states, dy, dfinal):
    """dx [B, T, Gx, NH, D], dR [Gr, NH, D, D], db [Gb, NH, D] (input dtype) and d state0 (float32)."""
    dx, db, dr, dstate0 = backward_steps(cell_name, R, pre, states, dy, dfinal)
    with _Guard(R.device):
        dR = weight_gradient(dr, states, R.dtype)
    return dx, dR, db, dstate0


class AlternatingRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell_name, x, R, b, state):
        x, R, b, state = (t.contiguous() for t in (x, R, b, state))
        save = any(ctx.needs_input_grad[1:])
        y, final, pre, states = forward(cell_name, x, R, b, state, save)
        if save:
            ctx.save_for_backward(R, pre, states)
        ctx.cell_name = cell_name
        ctx.dtype = x.dtype
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        R, pre, states = ctx.saved_tensors
        S, NH, T1, B, D = states.shape
        if dy is None:
            dy = torch.zeros(B, T1 - 1, NH, D, dtype=ctx.dtype, device=R.device)
        if dfinal is None:
            dfinal = torch.zeros(S, B, NH, D, dtype=ctx.dtype, device=R.device)
        dx, dR, db, dstate0 = backward(ctx.cell_name, R, pre, states, dy.to(ctx.dtype).contiguous(), dfinal)
        needs = ctx.needs_input_grad
        return (None, dx if needs[1] else None, dR if needs[2] else None, db if needs[3] else None,
                dstate0.to(ctx.dtype) if needs[4] else None)
