"""Host side of the CUDA backend: loading the compiled variants, launches on torch's stream, dR and db.

Saved for backward (float32), in the Triton backend's layouts: the slots [T, B, Gb, NH, D] as the cell's forward
leaves them — LSTM its activated gates (i, f, z, o), GRU (r, z, n, and n's recurrent pre-activation), Elman and
sLSTM their pre-activations — and the states before every step [S, NH, T + 1, B, D]: (Gb + S) · 4 bytes per
(batch, step, hidden unit), 24 B for LSTM (B = 16, T = 1024, H = 768: 302 MB). Backward recomputes only
tanh(c) (LSTM) and sLSTM's gate functions, not σ / tanh of saved gates. The backward
kernel writes the slot gradients once in the input dtype (dx is a view of them) and per-row-group partial
sums of db (float32, summed here in a fixed order); dR = Σ_(b,t) dgate_(b,t)ᵀ h_(b,t-1) is one batched cuBLAS
GEMM per gate after the loop, on the same rounded operands the recurrent MMAs used. Deterministic: no atomics
on results (the grid kernels' barrier counts with one).

A call allocates its outputs and launches one kernel (backward: one kernel, one copy of h, GR GEMMs and a
sum; a grid kernel after zeroing its barrier counters); nothing synchronises with the host, so calls can be
captured in CUDA graphs.
"""

from __future__ import annotations

import functools
import logging

import torch

from ...cells import get_cell
from ..fused import dx_of, empty, sm_count
from . import planner  # through the module: tests and sweeps replace planner.device_facts
from .kernels import Variant, compile_variant

LOGGER = logging.getLogger("fusedrnn")

_DEFAULT_SMEM = 48 * 1024  # dynamic shared memory a kernel may use without opting in


def arch_of(device: torch.device) -> str:
    """The NVRTC target of a device: sm_90a on Hopper (as compile-all builds it), else sm_XY."""
    major, minor = torch.cuda.get_device_capability(device)
    return "sm_90a" if (major, minor) == (9, 0) else f"sm_{major}{minor}"


# A kernel that does nothing, launched never: only asked how many clusters of one CTA per SM the device holds at once
_PROBE_SOURCE = 'extern "C" __global__ void cluster_probe() {}\n'


@functools.cache
def cluster_capacity(device_index: int, cluster: int) -> int:
    """How many clusters of ``cluster`` CTAs, one CTA per SM, are resident at once (the driver's occupancy query on
    a probe kernel asking for all of an SM's shared memory). Where the query fails: SMs //
    cluster, with a warning."""
    from cuda.core import Device, LaunchConfig, ObjectCode

    from .nvrtc import compile_kernel

    try:
        Device(device_index).set_current()
        device = torch.device("cuda", device_index)
        probe = compile_kernel(_PROBE_SOURCE, "cluster_probe", arch_of(device))
        kernel = ObjectCode.from_cubin(probe.cubin).get_kernel(probe.symbol.encode())
        smem = planner.device_facts(device_index).limits.smem_per_block
        _set_attribute(kernel, "MAX_DYNAMIC_SHARED_SIZE_BYTES", smem, device_index)
        if cluster > 8:
            _set_attribute(kernel, "NON_PORTABLE_CLUSTER_SIZE_ALLOWED", 1, device_index)
        config = LaunchConfig(grid=(cluster, 1, 1), block=32, shmem_size=smem, cluster=(cluster, 1, 1))
        stream = _stream(_current_stream_handle(device))
        return max(1, kernel.occupancy.max_active_clusters(config, stream=stream))
    except Exception as error:  # an old driver or cuda-core without the query: every SM counted
        LOGGER.warning(
            "fusedrnn cuda: cannot ask how many clusters of %d fit at once (%s); assuming SMs / %d",
            cluster,
            error,
            cluster,
        )
        return max(1, sm_count(device_index) // cluster)


class _Loaded:
    """A variant loaded on one device: the kernel and its launch configurations by grid."""

    def __init__(self, v: Variant, device: torch.device):
        from cuda.core import Device, ObjectCode

        Device(device.index or 0).set_current()  # the primary context, which torch uses too
        compiled = compile_variant(v, arch_of(device))
        if compiled.spills:
            LOGGER.warning(
                "fusedrnn cuda: %s spills %d bytes of registers (slower, still correct)", v.name, compiled.spill_stores
            )
        self.module = ObjectCode.from_cubin(compiled.cubin)
        self.kernel = self.module.get_kernel(compiled.symbol.encode())  # the mangled name, as bytes
        if v.shape.smem > _DEFAULT_SMEM:
            _set_attribute(self.kernel, "MAX_DYNAMIC_SHARED_SIZE_BYTES", v.shape.smem, device.index or 0)
        if v.shape.cluster_size > 8:  # beyond the portable cluster size
            _set_attribute(self.kernel, "NON_PORTABLE_CLUSTER_SIZE_ALLOWED", 1, device.index or 0)
        self.variant = v
        self.configs: dict[tuple[int, int], object] = {}

    def launch(self, grid: tuple[int, int], device: torch.device, *args) -> None:
        """``grid``: (heads, batch tiles); a head over a cluster takes ``cluster`` CTAs along x. A variant over a
        cooperative grid runs (CTAs per head, heads, batch tiles) and takes two more arguments: the exchange
        buffers and the zeroed barrier counters (``grid_buffers``)."""
        from cuda.core import LaunchConfig, launch

        config = self.configs.get(grid)
        if config is None:
            shape = self.variant.shape
            # with a cluster the grid counts clusters
            extra: dict[str, object] = {"cluster": (shape.cluster_size, 1, 1)} if shape.cluster_size > 1 else {}
            dims = (shape.ctas_per_head, *grid) if shape.cooperative else grid
            if shape.cooperative:
                extra["is_cooperative"] = True
            config = self.configs[grid] = LaunchConfig(
                grid=dims, block=self.variant.threads, shmem_size=shape.smem, **extra
            )
        launch(_stream(_current_stream_handle(device)), config, self.kernel, *args)


def grid_buffers(v: Variant, kind: str, cell_name: str, num_heads: int, tiles: int, device: torch.device):
    """The arguments a grid kernel adds: per (head, batch tile) two exchange buffers of the step's A operand (16
    rows x K, 16-bit, fragment order) and a barrier counter, zeroed (the kernel's barriers count up from 0); none
    for other kernels."""
    if not v.shape.cooperative:
        return ()
    K = v.head_dim if kind == "forward" else get_cell(cell_name).num_gates_r * v.head_dim
    xchg = torch.empty(num_heads * tiles * 2 * 16 * K, dtype=torch.int16, device=device)
    counters = torch.zeros(num_heads * tiles, dtype=torch.int32, device=device)
    return xchg, counters


def _set_attribute(kernel, name: str, value: int, device_index: int) -> None:
    """Set CU_FUNC_ATTRIBUTE_<name> of a loaded kernel."""
    from cuda.bindings import driver

    attr = getattr(driver.CUfunction_attribute, f"CU_FUNC_ATTRIBUTE_{name}")
    handle = kernel.handle
    if isinstance(handle, driver.CUkernel):
        (err,) = driver.cuKernelSetAttribute(attr, value, handle, driver.CUdevice(device_index))
    else:
        (err,) = driver.cuFuncSetAttribute(handle, attr, value)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"fusedrnn cuda: cannot set a kernel's {name} to {value}: {err}")


def _current_stream_handle(device: torch.device) -> int:
    """torch's current stream on ``device`` as a CUstream handle; through torch's raw accessor where it has one (as
    Triton's launcher does), which saves building a torch.cuda.Stream per launch."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return raw(device.index or 0) if raw is not None else torch.cuda.current_stream(device).cuda_stream


_STREAMS: dict[int, object] = {}


def _stream(handle: int):
    stream = _STREAMS.get(handle)
    if stream is None:
        from cuda.core import Stream

        stream = _STREAMS[handle] = Stream.from_handle(handle)
    return stream


_LOADED: dict[tuple[int, str], _Loaded] = {}


def _loaded(
    kind: str, cell_name: str, head_dim: int, dtype: torch.dtype, device: torch.device, batch: int, num_heads: int
) -> _Loaded:
    v = planner.plan_kernel(kind, cell_name, head_dim, dtype, batch, num_heads, planner.device_facts(device.index or 0))
    if isinstance(v, str):  # the backend's supports() refused this call; reaching here is a bug
        raise ValueError(f"backend 'cuda' cannot run this call: {v}")
    key = (device.index or 0, v.name)
    found = _LOADED.get(key)
    if found is None:
        found = _LOADED[key] = _Loaded(v, device)
    return found


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous with a 16-byte aligned start, as the kernels' 16-byte asynchronous copies need."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def forward(cell_name: str, x, R, b, state, lengths, save: bool, resets=None):
    """y, final (input dtype) and, when saving, pre and states (float32). lengths: int32 [B] or None; resets:
    contiguous bool [B, T] or None."""
    B, T, _, NH, D = x.shape
    cell = get_cell(cell_name)
    GB, S = cell.num_gates_b, cell.num_states
    loaded = _loaded("forward", cell_name, D, x.dtype, x.device, B, NH)
    x, R, b, state = (_aligned(t) for t in (x, R, b, state))
    y = empty(B, T, NH, D, dtype=x.dtype, device=x.device)
    final = empty(S, B, NH, D, dtype=x.dtype, device=x.device)
    pre = empty(T, B, GB, NH, D, dtype=torch.float32, device=x.device) if save else None
    states = empty(S, NH, T + 1, B, D, dtype=torch.float32, device=x.device) if save else None
    grid = (NH, -(-B // loaded.variant.shape.rows))
    extra = grid_buffers(loaded.variant, "forward", cell_name, *grid, x.device)
    loaded.launch(
        grid,
        x.device,
        _ptr(x),
        _ptr(R),
        _ptr(b),
        _ptr(state),
        _ptr(lengths),
        _ptr(resets),
        _ptr(y),
        _ptr(final),
        _ptr(pre),
        _ptr(states),
        B,
        T,
        NH,
        int(save),
        loaded.variant.shape.smem,
        *(_ptr(t) for t in extra),
    )
    return y, final, pre, states


def backward_kernel(cell_name: str, R, pre, states, lengths, dy, dfinal, resets=None):
    """Slot gradients dgate [B, T, Gb, NH, D] (input dtype), db (input dtype), d state0 (float32)."""
    S, NH, T1, B, D = states.shape
    T = T1 - 1
    cell = get_cell(cell_name)
    GB = cell.num_gates_b
    loaded = _loaded("backward", cell_name, D, R.dtype, R.device, B, NH)
    R, dy, dfinal = (_aligned(t) for t in (R, dy, dfinal))
    tiles = -(-B // loaded.variant.shape.rows)
    dgate = empty(B, T, GB, NH, D, dtype=R.dtype, device=R.device)
    # the kernels' per-tile partial sums of db: 8 rows (a thread's rows summed), over a cluster or a grid one per
    # batch row
    shape = loaded.variant.shape
    part_rows = shape.rows if shape.ctas_per_head > 1 else 8
    db_part = empty(tiles * part_rows, GB, NH, D, dtype=torch.float32, device=R.device)
    dstate0 = empty(S, B, NH, D, dtype=torch.float32, device=R.device)
    extra = grid_buffers(loaded.variant, "backward", cell_name, NH, tiles, R.device)
    loaded.launch(
        (NH, tiles),
        R.device,
        _ptr(R),
        _ptr(pre),
        _ptr(states),
        _ptr(lengths),
        _ptr(resets),
        _ptr(dy),
        _ptr(dfinal),
        _ptr(dgate),
        _ptr(db_part),
        _ptr(dstate0),
        B,
        T,
        NH,
        shape.smem,
        *(_ptr(t) for t in extra),
    )
    return dgate, db_part.sum(dim=0).to(R.dtype), dstate0


def weight_gradient(cell_name: str, dgate, states):
    """dR [Gr, NH, D, D] = Σ_(b,t) dgate[b, t, r_slot(g)]ᵀ h_{t-1}[b]: per gate one batched GEMM over heads,
    operands in the input dtype (the rounded values the recurrent MMAs used), float32 accumulation (float32
    inputs follow torch's TF32 setting)."""
    B, T, GB, NH, D = dgate.shape
    # h_{t-1} rounded to the input dtype, rows in dgate's (b, t) order: [NH, B·T, D]
    h = torch.empty(NH, B, T, D, dtype=dgate.dtype, device=dgate.device)
    h.copy_(states[0, :, :T].transpose(1, 2))
    h = h.view(NH, B * T, D)
    rows = dgate.view(B * T, GB, NH, D)
    slots = get_cell(cell_name).r_slots
    dR = torch.empty(len(slots), NH, D, D, dtype=dgate.dtype, device=dgate.device)
    for g, slot in enumerate(slots):
        torch.bmm(rows[:, slot].permute(1, 2, 0), h, out=dR[g])  # [NH, D, B·T] @ [NH, B·T, D], no copies
    return dR


def backward(cell_name: str, R, pre, states, lengths, dy, dfinal, resets=None):
    """dx [B, T, Gx, NH, D], dR [Gr, NH, D, D], db [Gb, NH, D] (input dtype) and d state0 (float32)."""
    dgate, db, dstate0 = backward_kernel(cell_name, R, pre, states, lengths, dy, dfinal, resets)
    return dx_of(cell_name, dgate), weight_gradient(cell_name, dgate, states), db, dstate0
