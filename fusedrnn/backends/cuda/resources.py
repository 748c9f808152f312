"""What every kernel family's resource model shares: a device's limits (``Limits``; documented per architecture in
``ARCH_LIMITS`` for compiling without a GPU) and the launch shape a model gives a kernel (``Shape``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the model needs of a device: registers per SM and per thread, shared memory per block (opt-in), the
    largest thread-block cluster (1: none; 16 on sm_90 with the non-portable size)."""

    regs_per_sm: int = 65536
    max_regs_per_thread: int = 255
    smem_per_block: int = 232448  # H100: 227 KB
    max_cluster: int = 1
    sms: int = 132  # SMs: a cooperative grid's CTAs all resident, one per SM


# Documented per compute capability (CUDA programming guide, "Technical specifications"), used only when
# compiling without a GPU; at run time the device's properties are read instead.
ARCH_LIMITS = {
    "sm_80": Limits(smem_per_block=166912, sms=108),  # 163 KB; A100
    "sm_86": Limits(smem_per_block=101376, sms=84),  # 99 KB
    "sm_89": Limits(smem_per_block=101376, sms=128),
    "sm_90": Limits(smem_per_block=232448, max_cluster=16),  # 227 KB; H100 SXM
    "sm_90a": Limits(smem_per_block=232448, max_cluster=16),
}


def device_limits(device_index: int) -> Limits:
    import torch

    props = torch.cuda.get_device_properties(device_index)
    return Limits(
        regs_per_sm=getattr(props, "regs_per_multiprocessor", 65536),
        smem_per_block=getattr(props, "shared_memory_per_block_optin", 49152),
        # the cluster kernels are built for sm_90a only (st.async, mapa, mbarrier transaction counts)
        max_cluster=16 if (props.major, props.minor) == (9, 0) else 1,
        sms=props.multi_processor_count,
    )


@dataclasses.dataclass(frozen=True)
class Shape:
    """A kernel's launch shape: NT unit tiles per warp, STAGES prefetch depth, ROWS batch rows per CTA, and what
    they cost."""

    nt: int
    stages: int
    warps: int
    rows: int
    smem: int  # bytes of dynamic shared memory
    registers: int  # the model's estimate per thread
    trans: bool = False  # forward_transposed / backward_transposed (R · hᵀ; dhᵀ = Rᵀ · dpᵀ with 16 units per warp tile)
    cluster: int = 1  # CTAs per head (forward_transposed / backward_cluster over a cluster), D / cluster units each
    ksm: int = 0  # K steps of R per warp read from shared memory each step (forward_transposed over a cluster)
    grid: int = 1  # CTAs per head of a cooperative grid (forward_grid / backward_grid), D / grid units each
    kr: int = 0  # the grid kernels: K steps of R per warp in registers (the rest in shared memory)
    ck: int = 0  # the grid kernels: K steps per chunk of the exchanged operand (``stages`` chunks in flight)
    ksplit: int = 0  # forward_split_k (over a cluster): groups of warps K is split over (warps / ksplit row groups)


def elt_bytes(dtype_name: str) -> int:
    return 4 if dtype_name == "float32" else 2
