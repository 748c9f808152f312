"""Host side of the alternating backend: per-step GEMM + pointwise kernel, CUDA graphs.

Per step t of the forward, one of two paths (``forward_tile`` decides; both compute the same function from
the same operands, only the summation order of R·h differs):
  GEMM path (the backend's design; FUSEDRNN_ALTERNATING_FUSED=0 forces it):
    gates = h_{t-1} @ Wᵀ           one torch.bmm over heads (cuBLAS); W[n] = R[:, n] as [GR·D, D], like the
                                   weight of an nn.Linear per head, copied from R once per call
    forward_step_kernel            adds x_t and b, applies the cell, writes y_t, h_t (the next GEMM's operand),
                                   the states carry, and what backward needs
  fused path (the default for batches of at most FUSED_MAX_BATCH rows):
    forward_fused_step_kernel      one launch: each program computes R·h_{t-1} for a block of hidden units of
                                   every gate (tl.dot over W, float32 accumulation) and applies the same
                                   epilogue as forward_step_kernel to them. Saves the GEMM launch, its
                                   gates round trip through memory and one kernel boundary per step (on an
                                   H100, LSTM 1 x 768, B = 16: cuBLAS 3.45 µs + pointwise 2.09 µs per step).
and per step of the backward (t = T-1 .. 0):
    backward_step_kernel           dh = direct + Σ_g dh_part_g + dy_t; the cell's backward; writes dx_t, the R
                                   gates' slot gradients (input dtype, into the per-call dr for dR and into the
                                   GEMM operand dpg), the direct-gradient carry and a running sum for db
    dh_part = dpg @ W              one torch.bmm over (head, gate) pairs: dh_part[n, g] = dp_g R[g, n], a
                                   GEMM of K = D per gate instead of one of K = GR·D per head (split-K by
                                   gate: GR times the thread blocks at B = 16; the next step's kernel sums
                                   the GR partials in gate order, no extra launch)
After the loop, dR = Σ_t dr_tᵀ h_{t-1} is one cuBLAS GEMM per head ([GR·D, T·B] @ [T·B, D], torch.bmm
over heads; ``weight_gradient``) from the slot gradients dr as the kernel rounded them to the input dtype
(the values the backward GEMM used, as in the Triton backend) and the saved h rounded to the input dtype
(the values the forward GEMM used); db is one sum over the batch of per-element running sums.
Deterministic: no atomics, fixed summation orders (cuBLAS picks the same kernel for the same shapes).

GEMM precision (``gemm_mode``). Every GEMM accumulates in float32 (cuBLAS).
  * float32 inputs: float32 throughout; TF32 only where torch allows TF32 matmuls
    (torch.backends.cuda.matmul.allow_tf32, read when a graph is captured and part of the cache key).
  * bfloat16 / float16 inputs on CUDA, where torch has the float32-output GEMM ``torch.bmm(a, b,
    out_dtype=torch.float32)`` (aten::bmm.dtype_out, a CUDA kernel of recent torch; detected once per
    device and dtype by ``float32_gemm_output``): the GEMMs write float32, so R·h and Rᵀ·dp are never
    rounded; the only roundings are those of the GEMM operands h and dp (and x), as in the Triton backend.
    dR's GEMM writes float32 too (its long T·B reduction, split-K included, stays in float32), rounded once
    to the input dtype at the end.
  * bfloat16 / float16 inputs where that GEMM is missing (older torch): the GEMMs write the input dtype:
    R·h (and each gate's Rᵀ·dp partial) is rounded once to the input dtype before the kernel adds it in
    float32, a relative error of 2^-9 (bfloat16) / 2^-12 (float16) on that term, about √2 times the Triton
    backend's error; enough to flip sLSTM's branch points (max(q, 1), max(ĩ, ·)) on tiny problems.
  * CPU (TRITON_INTERPRET=1, tests): float16 GEMMs run on float32 copies of the operands with float32
    results: the float32-output path's numbers (up to summation order), so the interpreter tests the
    kernels as CUDA runs them. ``FLOAT32_GEMM_OUTPUT = False`` selects the input-dtype path (tests).
  * the fused forward: h (input dtype) times W (input dtype) accumulated in float32 by tl.dot, never
    rounded: the "f32out" numbers whatever the GEMM mode; float32 inputs use TF32 only where torch allows
    TF32 matmuls (as the Triton backend's ``dot_precision``).

Saved for backward (float32, fresh per call, the Triton backend's tensors and layouts): the pre-activation
slots [T, B, Gb, NH, D] and the states before every step [S, NH, T + 1, B, D].

CUDA graphs: the whole T-step loop (2 nodes per step: GEMM, pointwise kernel; 1 on the fused path) is
captured once per (direction, cell, B, T, NH, D, dtype, device, saving, GEMM mode, prefetch, matmul flags,
with lengths, forward path and tile) and replayed on later calls. A plan's static buffers (GEMM operands and
results, h, carries, bias, the address table) are overwritten by every replay; everything returned to the
caller or saved for backward is a fresh tensor of that call, whose address reaches the kernels through the
table, so no replay overwrites an earlier call's outputs and no input or output is copied in or out.
Replays are ordered on the current stream: calls that share a plan must not run concurrently on different
streams. The first call of a plan runs the loop eagerly on a side stream (it compiles the kernels and
initialises cuBLAS, and computes that call's results), then captures. On the CPU (TRITON_INTERPRET=1), and
with FUSEDRNN_ALTERNATING_GRAPHS=0, the same loop runs eagerly.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from collections import OrderedDict

import torch
import triton

from ...cells import get_cell
from ...derived import fingerprint
from ..fused import empty, sm_count, start_states
from ..triton.launch import cell_constants, dot_precision, fast_math, initial_constants
from .kernels import backward_step_kernel, forward_fused_step_kernel, forward_step_kernel

__all__ = [
    "forward",
    "backward",
    "backward_steps",
    "weight_gradient",
    "clear_cache",
    "cached_plans",
    "float32_gemm_output",
    "gemm_mode",
    "FusedTile",
    "forward_tile",
]

GRAPHS_ENV = "FUSEDRNN_ALTERNATING_GRAPHS"  # "0": run the step loop eagerly on CUDA too (debugging, timing)
PREFETCH_ENV = "FUSEDRNN_ALTERNATING_PREFETCH"  # "0": no L2 prefetch of the next step's inputs (timing)
F32_GEMM_ENV = "FUSEDRNN_ALTERNATING_F32_GEMM"  # "0": 16-bit GEMMs write the input dtype (timing, precision)
FUSED_ENV = "FUSEDRNN_ALTERNATING_FUSED"  # "0": the forward runs the GEMM path (cuBLAS + pointwise) per step
MAX_PLANS = 64  # cached plans (each holds its buffers and, on CUDA, one graph); least recently used go first
BLOCK = 256  # elements per program of the pointwise kernels
NUM_WARPS = 4


def _use_graphs(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get(GRAPHS_ENV, "1") != "0"


def _fast(dtype: torch.dtype, device: torch.device) -> bool:
    """The Triton backend's approximate σ / tanh (tanh.approx.f32: NVIDIA, sm_75+) for 16-bit inputs."""
    if not fast_math(dtype, device) or torch.version.hip is not None:
        return False
    return torch.cuda.get_device_capability(device) >= (7, 5)


def _prefetch(device: torch.device) -> bool:
    """L2 prefetches of the next step's per-call inputs (PTX: NVIDIA GPUs only; FUSEDRNN_ALTERNATING_PREFETCH=0
    turns them off, for comparisons). Part of the plan key."""
    return device.type == "cuda" and torch.version.hip is None and os.environ.get(PREFETCH_ENV, "1") != "0"


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


# --- GEMMs: float32 results for 16-bit inputs ----------------------------------------------------------

# False: 16-bit GEMMs write the input dtype even where torch has the float32-output GEMM (tests, comparisons).
FLOAT32_GEMM_OUTPUT = os.environ.get(F32_GEMM_ENV, "1") != "0"
_F32_OUT_SUPPORT: dict[tuple, bool] = {}


def float32_gemm_output(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``torch.bmm(a, b, out_dtype=torch.float32, out=...)`` works for ``dtype`` on this CUDA device.

    aten::bmm.dtype_out (and mm.dtype_out) exist in recent torch, with a CUDA kernel only. Tried once per
    (device, dtype) on tiny tensors, checked against the exact result (a float32 sum that no 16-bit output
    could hold); anything that fails means no. The try synchronises, so it cannot run while the current
    stream captures a CUDA graph (a first call of this dtype inside a caller's capture): the answer is then
    no, for that call only (not cached).
    """
    key = (device, dtype)
    if key not in _F32_OUT_SUPPORT:
        if torch.cuda.is_current_stream_capturing():
            return False
        ok = False
        try:
            a = torch.full((2, 16, 16), 1.0 + 2.0**-7, dtype=dtype, device=device)
            out = torch.empty(2, 16, 16, dtype=torch.float32, device=device)
            torch.bmm(a, a, out_dtype=torch.float32, out=out)
            exact = 16 * (1.0 + 2.0**-7) ** 2  # 16.5000610...: not a bfloat16 / float16 number
            ok = out.dtype == torch.float32 and bool(((out - exact).abs() < 1e-4).all())
        except (TypeError, RuntimeError, NotImplementedError):
            ok = False
        _F32_OUT_SUPPORT[key] = ok
    return _F32_OUT_SUPPORT[key]


def gemm_mode(dtype: torch.dtype, device: torch.device) -> str:
    """How the GEMMs of a call run (see the module docstring):

    "native"  operands and result in the input dtype (float32 inputs; 16-bit where "f32out" is missing)
    "f32out"  16-bit operands, float32 result: torch.bmm(..., out_dtype=torch.float32) (CUDA)
    "upcast"  16-bit operands copied to float32, float32 result (CPU / interpreter: the "f32out" numbers)
    """
    if dtype == torch.float32 or not FLOAT32_GEMM_OUTPUT:
        return "native"
    if device.type == "cuda":
        return "f32out" if float32_gemm_output(dtype, device) else "native"
    return "upcast"


def _gemm_out_dtype(mode: str, dtype: torch.dtype) -> torch.dtype:
    return dtype if mode == "native" else torch.float32


def _bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, mode: str) -> torch.Tensor:
    """out = a @ b (batched), as ``mode`` says; out has ``_gemm_out_dtype(mode, a.dtype)``."""
    if mode == "f32out":
        return torch.bmm(a, b, out_dtype=torch.float32, out=out)
    if mode == "upcast":
        return torch.bmm(a.float(), b.float(), out=out)
    return torch.bmm(a, b, out=out)


def _set_table(table: torch.Tensor, tensors) -> None:
    """Write the tensors' addresses into ``table``, ordered on the current stream after earlier replays.

    One fill per entry: no host synchronisation, no host buffer that must outlive an asynchronous copy, and
    safe inside a caller's own CUDA graph capture (the addresses become kernel arguments of the fills).
    """
    for i, tensor in enumerate(tensors):
        table[i].fill_(tensor.data_ptr())


# --- the forward path: GEMM + pointwise kernel, or one fused kernel per step -------------------------------

# Measured on an H100 (LSTM 1 x 768, T = 1024, bf16, benchmarks/alt_fused_bench.py): the fused forward wins
# at B = 16 (5.0 ms vs 6.8 ms on the GEMM path) and loses at B = 64 (10.4 vs 6.7) and 128 (17.8 vs 7.7),
# where one program's batch tile of 64 rows makes each step's MMA chain long and cuBLAS spreads the work
# better. B = 32 was not measured; the cut is at the largest batch measured to win.
FUSED_MAX_BATCH = 16
_MIN_TILE = 16  # tl.dot needs every dimension >= 16
_K_BYTES = 256  # bytes of one W row per k step: BLOCK_K = 128 (16-bit) / 64 (float32)
_WGMMA_ROWS = 64  # Triton's Hopper MMA (wgmma) takes tiles of 64 rows and more; smaller ones use mma.sync


@dataclasses.dataclass(frozen=True)
class FusedTile:
    """Launch shape of ``forward_fused_step_kernel``: batch rows, hidden units (per gate) and inputs (k) per
    tile, accumulators that the k tiles alternate between (1 or 2), warps and software-pipeline stages of
    its k loop."""

    block_b: int
    block_j: int
    block_k: int
    k_chains: int
    num_warps: int
    num_stages: int


def _gate_rows(num_gates_r: int) -> int:
    """GP of the fused kernel: the gates' W rows per hidden unit in its MMA (a missing fourth gate padded)."""
    return 1 if num_gates_r == 1 else 4


def _sms(device: torch.device) -> int | None:
    return sm_count(device.index or 0) if device.type == "cuda" else None


def forward_tile(
    num_gates_r: int,
    B: int,
    NH: int,
    D: int,
    dtype: torch.dtype,
    device: torch.device,
    fused: bool | None = None,
    **overrides: int,
) -> FusedTile | None:
    """The forward path of a call, decided here only: None runs the GEMM path (per step a cuBLAS GEMM and
    ``forward_step_kernel``), a FusedTile runs ``forward_fused_step_kernel`` with that launch shape.

    Rule: fused when B <= FUSED_MAX_BATCH, unless FUSEDRNN_ALTERNATING_FUSED=0; ``fused`` (True / False)
    overrides both (tests, benchmarks). ``overrides``: any FusedTile field (benchmarks try alternatives
    through these keywords; autotuning would benchmark during graph capture).

    Defaults, reasoned from the shape of the work on an H100; measured against 15 alternatives with
    benchmarks/alt_fused_bench.py (BENCHMARKS.md): LSTM 1 x 768, B = 16, every tile 4.7-6.2 ms, the default
    5.0-5.4 ms, within the run-to-run spread of the fastest ones. LSTM 1 x 768, B = 16: W is 4.7 MB and stays in
    the 50 MB L2; a step is a few MFLOP of MMA, bound by how fast the SMs pull W from L2 and by latency.
      block_b     the batch rounded up to a power of two, 16 (the MMA minimum) to 64: one batch tile, so W
                  is read once per step
      block_j     the smallest of 4, 8, 16 (with GP·block_j >= 16 MMA rows, GP = 4 gates; Elman: 16) whose
                  NH·D / block_j programs (times the batch tiles) fit on the GPU's SMs at once; 16 where none
                  does. More programs = more SMs sharing the per-step W stream, which each program also
                  pays with one read of all of h: LSTM 1 x 768 -> block_j 8, 96 programs of 4 x 8 rows,
                  each 49 KB of W + 24 KB of h per step (block_j 16: 48 programs, 98 + 24 KB, a 64-row
                  wgmma tile; block_j 4: 192 programs, two on some SMs)
      block_k     256 bytes of each W row per k step (128 16-bit / 64 float32 inputs; at most D rounded up to
                  a power of two): every row load is two full 128-byte lines; a stage of 32 W rows and 16
                  h rows is 12 KB
      k_chains    2 below 64 MMA rows with a batch tile of 16, else 1. Below 64 rows Triton emits mma.sync
                  (m16n8k16), each waiting for the previous one into its accumulator: D / 16 = 48 in a chain
                  at D = 768, at an estimated ~30 cycles each about as long as the loads of W; two
                  accumulators halve the chain. 64 rows are a wgmma tile, whose accumulations are pipelined
                  in the tensor core; wider batch tiles give every warp several independent chains.
      num_warps   one per 16 MMA rows with two accumulators (2 at 32 rows): Triton then lays the warps along
                  the rows only ([num_warps, 1]: it does so for every loop of two dots), so more warps
                  would repeat each other's products; else 4 (one warpgroup for wgmma; a [2, 2] split of
                  32 rows x 16 batch rows for one mma.sync accumulator)
      num_stages 3  two stages in flight while one is multiplied
    On the CPU (the interpreter) block_j is 16: fewest programs, fastest tests.
    """
    if fused is None:
        fused = os.environ.get(FUSED_ENV, "1") != "0" and B <= FUSED_MAX_BATCH
    if not fused:
        return None
    gp = _gate_rows(num_gates_r)
    span = max(_MIN_TILE, triton.next_power_of_2(D))  # no tile needs more inputs than this
    block_b = min(4 * _MIN_TILE, max(_MIN_TILE, triton.next_power_of_2(B)))
    sms = _sms(device)
    block_j = _MIN_TILE
    if sms is not None:
        while block_j // 2 * gp >= _MIN_TILE and NH * triton.cdiv(D, block_j // 2) * triton.cdiv(B, block_b) <= sms:
            block_j //= 2
    tile = {"block_b": block_b, "block_j": block_j, "block_k": min(_K_BYTES // dtype.itemsize, span), "num_stages": 3}
    unknown = set(overrides) - {field.name for field in dataclasses.fields(FusedTile)}
    if unknown:
        raise TypeError(f"unknown fused tile fields {sorted(unknown)}; known: {list(FusedTile.__annotations__)}")
    tile.update(overrides)
    rows = gp * tile["block_j"]  # the MMA's M
    tile.setdefault("k_chains", 2 if rows < _WGMMA_ROWS and tile["block_b"] == _MIN_TILE else 1)
    tile.setdefault("num_warps", min(8, max(1, rows // _MIN_TILE)) if tile["k_chains"] == 2 else 4)
    if tile["k_chains"] not in (1, 2):
        raise ValueError(f"k_chains = {tile['k_chains']}: 1 or 2")
    for name, least in (("block_b", _MIN_TILE), ("block_k", _MIN_TILE), ("block_j", max(1, _MIN_TILE // gp))):
        if tile[name] < least or tile[name] & (tile[name] - 1):
            raise ValueError(f"{name} = {tile[name]}: a power of two >= {least} (tl.dot's tiles are >= 16)")
    if triton.cdiv(B, tile["block_b"]) > 65535:
        raise ValueError(f"B = {B} needs more than 65535 batch tiles of {tile['block_b']} rows (a grid dimension)")
    return FusedTile(**tile)


# --- plans: static buffers, the step loop and its graph ---------------------------------------------------

# Guards the plan cache, and each call's sequence of buffer fills, table write, replay and reads (static
# buffers, W included, are shared): calls from several threads enqueue one after the other.
_LOCK = threading.RLock()
_PLANS: OrderedDict[tuple, _Plan] = OrderedDict()


class _LaidOut:
    """W [NH, Gr·D, D], R in the GEMM layout, of one (Gr, NH, D, dtype, device), shared by every plan of that size,
    and what it holds: the R copied in last (referenced, so that no other tensor can take its memory and data_ptr
    while W is said to hold it) and that R's fingerprint then."""

    def __init__(self, W: torch.Tensor) -> None:
        self.W = W
        self.held: tuple[torch.Tensor, tuple | None] | None = None

    def load(self, R: torch.Tensor) -> None:
        """R [Gr, NH, D, D] into W unless W holds this R unchanged (``fusedrnn.derived.fingerprint``): decoding one
        step at a time then copies no weights. While a CUDA graph is captured the copy is always recorded, since
        another call of the same size may refill W between replays."""
        key = fingerprint(R)
        capturing = R.is_cuda and torch.cuda.is_current_stream_capturing()
        if key is not None and self.held is not None and self.held[1] == key and not capturing:
            return
        NH, D = R.shape[1], R.shape[3]
        self.W.view(NH, -1, D, D).copy_(R.transpose(0, 1))
        self.held = (R, key)


_WEIGHTS: weakref.WeakValueDictionary[tuple, _LaidOut] = weakref.WeakValueDictionary()


def _weights(num_gates_r: int, NH: int, D: int, dtype: torch.dtype, device: torch.device) -> _LaidOut:
    key = (num_gates_r, NH, D, dtype, device)
    laid_out = _WEIGHTS.get(key)
    if laid_out is None:
        with torch.inference_mode(False):  # see _plan
            laid_out = _LaidOut(empty(NH, num_gates_r * D, D, dtype=dtype, device=device))
        _WEIGHTS[key] = laid_out
    return laid_out


class _Plan:
    """Static buffers of one call shape and direction, the step loop over them, and its CUDA graph."""

    def __init__(self, device: torch.device, batch: int, steps: int, has_lengths: bool, has_resets: bool):
        self.device = device
        self.graph = None
        self.replays = 0
        # per-row step counts and episode starts, copied in by every call (static buffers: the graph reads them
        # where they are)
        self.lens = torch.zeros(batch, dtype=torch.int32, device=device) if has_lengths else None
        self.starts = torch.zeros(batch, steps, dtype=torch.bool, device=device) if has_resets else None

    @property
    def lens_arg(self) -> torch.Tensor:
        """The kernels' ``lens`` argument: the buffer, or any tensor where HAS_LENGTHS is off (never read)."""
        return self.table if self.lens is None else self.lens

    @property
    def starts_arg(self) -> torch.Tensor:
        """The kernels' ``starts`` argument: the buffer, or any tensor where HAS_RESETS is off (never read)."""
        return self.table if self.starts is None else self.starts

    def set_lengths(self, lengths: torch.Tensor | None, resets: torch.Tensor | None = None) -> None:
        if lengths is not None:
            self.lens.copy_(lengths)
        if resets is not None:
            self.starts.copy_(resets)

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
    """``tile`` None: the GEMM path (gates buffer, one h buffer); a FusedTile: the fused kernel (no gates
    buffer, h ping-pongs between two buffers). The initial h goes into ``hbuf[0]`` either way."""

    def __init__(
        self, cell_name, B, T, NH, D, dtype, device, save, mode, has_lengths, has_resets, tile: FusedTile | None
    ):
        super().__init__(device, B, T, has_lengths, has_resets)
        self.consts = cell_constants(cell_name, with_x=True)
        self.initial = initial_constants(cell_name)
        GR, GB, S = self.consts["GR"], self.consts["GB"], self.consts["S"]
        self.dims = (B * NH * D, B, T, NH, D)
        self.save, self.fast, self.mode, self.prefetch = save, _fast(dtype, device), mode, _prefetch(device)
        self.dtype, self.tile = dtype, tile
        self.weights = _weights(GR, NH, D, dtype, device)
        self.W = self.weights.W  # [NH, GR·D, D]
        self.Wt = self.W.transpose(1, 2)  # [NH, D, GR·D], a view: cuBLAS reads it transposed
        self.hbuf = empty(1 if tile is None else 2, NH, B, D, dtype=dtype, device=device)
        self.h0 = self.hbuf[0]  # [NH, B, D]: the GEMM's operand; the initial h
        self.bias = empty(GB, NH, D, dtype=dtype, device=device)
        self.carry = empty(S, B, NH, D, dtype=torch.float32, device=device)
        self.table = torch.zeros(4, dtype=torch.int64, device=device)
        if tile is None:
            self.gates = empty(NH, B, GR * D, dtype=_gemm_out_dtype(mode, dtype), device=device)
            self.grid = (triton.cdiv(B * NH * D, BLOCK),)
        else:
            self.gates = None
            self.grid = (NH * triton.cdiv(D, tile.block_j), triton.cdiv(B, tile.block_b))

    def gemm(self) -> None:
        _bmm(self.h0, self.Wt, self.gates, self.mode)

    def pointwise(self, t: int, save: bool | None = None) -> None:
        N, B, T, NH, D = self.dims
        forward_step_kernel[self.grid](
            self.table,
            self.gates,
            self.bias,
            self.carry,
            self.hbuf,
            self.lens_arg,
            self.starts_arg,
            t,
            N,
            B,
            T,
            NH,
            D,
            **self.consts,
            SAVE=self.save if save is None else save,
            FAST=self.fast,
            PREFETCH=self.prefetch,
            BLOCK=BLOCK,
            HAS_LENGTHS=self.lens is not None,
            HAS_RESETS=self.starts is not None,
            **self.initial,
            num_warps=NUM_WARPS,
        )

    def fused_step(self, t: int, precision: str, save: bool | None = None) -> None:
        N, B, T, NH, D = self.dims
        tile = self.tile
        forward_fused_step_kernel[self.grid](
            self.table,
            self.W,
            self.bias,
            self.carry,
            self.hbuf,
            self.lens_arg,
            self.starts_arg,
            t,
            N,
            B,
            T,
            NH,
            D,
            **self.consts,
            SAVE=self.save if save is None else save,
            FAST=self.fast,
            PREFETCH=self.prefetch,
            HAS_LENGTHS=self.lens is not None,
            HAS_RESETS=self.starts is not None,
            **self.initial,
            DOT_PRECISION=precision,
            BLOCK_B=tile.block_b,
            BLOCK_J=tile.block_j,
            BLOCK_K=tile.block_k,
            K_CHAINS=tile.k_chains,
            num_warps=tile.num_warps,
            num_stages=tile.num_stages,
        )

    def steps(self) -> None:
        if self.tile is None:
            for t in range(self.dims[2]):
                self.gemm()
                self.pointwise(t)
        else:
            precision = dot_precision(self.dtype)  # on CUDA part of the plan key (the matmul flags)
            for t in range(self.dims[2]):
                self.fused_step(t, precision)


class _BackwardPlan(_Plan):
    def __init__(self, cell_name, B, T, NH, D, dtype, device, mode, has_lengths, has_resets):
        super().__init__(device, B, T, has_lengths, has_resets)
        self.consts = cell_constants(cell_name, with_x=True)
        GR, GB, S = self.consts["GR"], self.consts["GB"], self.consts["S"]
        self.dims = (B * NH * D, B, T, NH, D)
        self.fast, self.mode, self.prefetch = _fast(dtype, device), mode, _prefetch(device)
        self.weights = _weights(GR, NH, D, dtype, device)
        self.W = self.weights.W
        self.Wg = self.W.view(NH * GR, D, D)  # [n·GR + g] = R[g, n] as [D_out, D_in]
        self.dpg = empty(NH, GR, B, D, dtype=dtype, device=device)
        self.dh_part = empty(NH, GR, B, D, dtype=_gemm_out_dtype(mode, dtype), device=device)
        self.dcarry = empty(S, B, NH, D, dtype=torch.float32, device=device)
        self.db_acc = empty(GB, B, NH, D, dtype=torch.float32, device=device)
        self.table = torch.zeros(5, dtype=torch.int64, device=device)
        self.grid = (triton.cdiv(B * NH * D, BLOCK),)

    def gemm(self) -> None:
        NH, GR, B, D = self.dpg.shape
        _bmm(self.dpg.view(NH * GR, B, D), self.Wg, self.dh_part.view(NH * GR, B, D), self.mode)

    def pointwise(self, t: int) -> None:
        N, B, T, NH, D = self.dims
        backward_step_kernel[self.grid](
            self.table,
            self.dh_part,
            self.dcarry,
            self.dpg,
            self.db_acc,
            self.lens_arg,
            self.starts_arg,
            t,
            N,
            B,
            T,
            NH,
            D,
            **self.consts,
            FAST=self.fast,
            PREFETCH=self.prefetch,
            BLOCK=BLOCK,
            HAS_LENGTHS=self.lens is not None,
            HAS_RESETS=self.starts is not None,
            num_warps=NUM_WARPS,
        )

    def steps(self) -> None:
        for t in range(self.dims[2] - 1, -1, -1):
            self.pointwise(t)
            self.gemm()


def _plan(
    kind: str,
    cell_name: str,
    B: int,
    T: int,
    NH: int,
    D: int,
    dtype,
    device,
    has_lengths: bool,
    save: bool = True,
    tile: FusedTile | None = None,
    has_resets: bool = False,
):
    """The cached plan of a call. Key: (kind, cell, B, T, NH, D, dtype, device, save, GEMM mode, prefetch,
    matmul flags, with lengths, path, with resets), path = "gemm" or the forward's FusedTile."""
    mode = gemm_mode(dtype, device)
    key = (
        kind,
        cell_name,
        B,
        T,
        NH,
        D,
        dtype,
        device,
        save,
        mode,
        _prefetch(device),
        _matmul_flags(dtype, device),
        has_lengths,
        "gemm" if tile is None else tile,
        has_resets,
    )
    with _LOCK:
        plan = _PLANS.get(key)
        if plan is None:
            # static buffers outlive the call: made under torch.inference_mode they would be inference tensors,
            # which no later call outside it may fill
            with torch.inference_mode(False):
                if kind == "fw":
                    plan = _ForwardPlan(
                        cell_name, B, T, NH, D, dtype, device, save, mode, has_lengths, has_resets, tile
                    )
                else:
                    plan = _BackwardPlan(cell_name, B, T, NH, D, dtype, device, mode, has_lengths, has_resets)
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
        for laid_out in list(_WEIGHTS.values()):
            laid_out.held = None


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


def forward(cell_name: str, x, R, b, state, lengths, save: bool, fused: bool | None = None, resets=None, **tile: int):
    """x, R, b, state contiguous; lengths int32 [B] or None; resets bool [B, T] or None. y and final (input dtype);
    when saving, pre and states (float32), else None. ``fused`` and ``tile``: the path and tile overrides of
    ``forward_tile`` (tests, benchmarks)."""
    B, T, _, NH, D = x.shape
    dtype, device = x.dtype, x.device
    cell = get_cell(cell_name)
    path = forward_tile(cell.num_gates_r, B, NH, D, dtype, device, fused, **tile)
    if resets is not None:  # step 0's starts on the host; the kernels apply step t + 1's at the end of step t
        state = start_states(cell, state, resets, lengths)
    with _Guard(device), _LOCK:  # the lock: one call at a time fills and replays the shared buffers
        has_resets = resets is not None
        plan = _plan("fw", cell_name, B, T, NH, D, dtype, device, lengths is not None, save, path, has_resets)
        plan.set_lengths(lengths, resets)
        y = empty(B, T, NH, D, dtype=dtype, device=device)
        if save:
            pre = empty(T, B, cell.num_gates_b, NH, D, dtype=torch.float32, device=device)
            states = empty(cell.num_states, NH, T + 1, B, D, dtype=torch.float32, device=device)
            states[:, :, 0].copy_(state.transpose(1, 2))
        else:
            pre = states = None
        plan.weights.load(R)
        plan.bias.copy_(b)
        plan.carry.copy_(state)
        plan.h0.copy_(state[0].transpose(0, 1))
        _set_table(plan.table, (x, y) + ((states, pre) if save else (y, y)))  # SAVE=False: entries 2, 3 unread
        plan.run()
        final = plan.carry.to(dtype=dtype, copy=True)
    return y, final, pre, states


def backward_steps(cell_name: str, R, pre, states, lengths, dy, dfinal, resets=None):
    """The step loop: dx [B, T, Gx, NH, D], db [Gb, NH, D], dr [NH, T, B, Gr, D] (input dtype) and
    d state0 [S, B, NH, D] (float32). pre, states as saved; dy, dfinal contiguous in the input dtype."""
    S, NH, T1, B, D = states.shape
    T = T1 - 1
    dtype, device = R.dtype, R.device
    cell = get_cell(cell_name)
    with _Guard(device), _LOCK:
        plan = _plan("bw", cell_name, B, T, NH, D, dtype, device, lengths is not None, has_resets=resets is not None)
        plan.set_lengths(lengths, resets)
        dx = empty(B, T, cell.num_gates_x, NH, D, dtype=dtype, device=device)
        dr = empty(NH, T, B, cell.num_gates_r, D, dtype=dtype, device=device)
        plan.weights.load(R)
        plan.dcarry.copy_(dfinal)
        plan.dh_part.zero_()
        plan.db_acc.zero_()
        _set_table(plan.table, (pre, states, dy, dx, dr))
        plan.run()
        db = plan.db_acc.sum(dim=1).to(dtype)
        dstate0 = plan.dcarry.clone()
        # the GEMM of step 0 is the gradient of the initial h: its partials summed in gate order, as the kernel
        dh0 = plan.dh_part[:, 0].float()
        for g in range(1, cell.num_gates_r):
            dh0 = dh0 + plan.dh_part[:, g]
        dstate0[0] += dh0.transpose(0, 1)
    return dx, db, dr, dstate0


def weight_gradient(dr, states):
    """dR [Gr, NH, D, D] in dr's dtype from dr [NH, T, B, Gr, D] and the saved states [S, NH, T + 1, B, D].

    Per head one cuBLAS GEMM dW[n] = dr[n]ᵀ h_prev[n], [Gr·D, T·B] @ [T·B, D] (one torch.bmm over heads), with
    the operands the recurrent GEMMs used: dr as the kernel rounded it, h_{t-1} rounded to the input dtype.
    float32 inputs: float32 GEMM (TF32 only where torch allows it). 16-bit inputs: float32 result where
    torch has the float32-output GEMM (on the CPU: float32 copies), rounded once to the input dtype;
    elsewhere cuBLAS's input-dtype GEMM (float32 accumulation, its split-K reductions as torch's
    reduced-precision flags allow).
    """
    NH, T, B, GR, D = dr.shape
    dtype, TB = dr.dtype, T * B
    h_prev = states[0, :, :T]  # [NH, T, B, D] float32, a view; (t, b) rows of each head are contiguous
    if dtype != torch.float32:
        h_prev = h_prev.to(dtype)  # contiguous; the forward GEMM's operand hbuf held these values
    h_prev = h_prev.reshape(NH, TB, D)  # a view in both cases
    mode = gemm_mode(dtype, dr.device)
    dW = torch.empty(NH, GR * D, D, dtype=_gemm_out_dtype(mode, dtype), device=dr.device)
    _bmm(dr.view(NH, TB, GR * D).transpose(1, 2), h_prev, dW, mode)
    # dW[n, g·D + i, j] = dR[g, n, i, j]
    return dW.view(NH, GR, D, D).transpose(0, 1).contiguous().to(dtype)


def backward(cell_name: str, R, pre, states, lengths, dy, dfinal, resets=None):
    """dx [B, T, Gx, NH, D], dR [Gr, NH, D, D], db [Gb, NH, D] (input dtype) and d state0 (float32)."""
    dx, db, dr, dstate0 = backward_steps(cell_name, R, pre, states, lengths, dy, dfinal, resets)
    with _Guard(R.device):
        dR = weight_gradient(dr, states)
    return dx, dR, db, dstate0
