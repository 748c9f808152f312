"""What every kernel family's resource model shares: a device's limits (``Limits``; documented per architecture in
``ARCH_LIMITS`` for compiling without a GPU) and the launch shape a model gives a kernel (``Shape``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar


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
    """What every kernel family's shape gives the launch: warps and batch rows per CTA, dynamic shared memory and the
    model's registers per thread. Each family's shape (model.py, split_k.py, grid.py) adds its own fields and the
    template arguments of its kernels after (cell, element type, D)."""

    warps: int
    rows: int  # batch rows per CTA
    smem: int  # bytes of dynamic shared memory
    registers: int  # the model's estimate per thread
    family: ClassVar[str] = ""

    @property
    def cluster_size(self) -> int:
        """CTAs per thread-block cluster (1: no cluster)."""
        return 1

    @property
    def cooperative(self) -> bool:
        """Launched as a cooperative grid (every CTA resident)."""
        return False

    @property
    def ctas_per_head(self) -> int:
        return self.cluster_size

    def template_args(self, kind: str, head_dim: int) -> str:
        raise NotImplementedError


def elt_bytes(dtype_name: str) -> int:
    return 4 if dtype_name == "float32" else 2
