"""The CUDA kernels' variants: which template instance a call needs, and every variant the backend ships.

A variant is one instance of ``rnn_forward`` / ``rnn_backward`` in rnn.cu: (cell, element type, head size D,
NT, STAGES), the last two from the resource model (``model.kernel_shape``). Sequence length, batch, head count,
saving for backward and variable lengths are run-time arguments: they never cause a compilation.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources

from .model import ARCH_LIMITS, Limits, Shape, kernel_shape

CELLS = ("lstm", "gru", "elman", "slstm")
CELL_IDS = {name: i for i, name in enumerate(CELLS)}  # CellOf<ID> in rnn.cu
ELEMENT_TYPES = {"bfloat16": "frnn::BF16", "float16": "frnn::F16", "float32": "frnn::F32"}
KINDS = ("forward", "backward")
# Every head size the kernels are built for. 80, 96 and 112 are left out: with 10, 12 and 14 warps per CTA their
# register budgets are odd, and builds spilled where the model said they fit. 192 and up: over a thread-block
# cluster (sm_90) where the model fits R in the cluster's registers, or (forward, 16-bit) in its registers and
# shared memory; else (16-bit) over a cooperative grid of up to one CTA per SM; the rest goes elsewhere.
HEAD_DIMS = (16, 32, 48, 64, 128, 192, 256, 384, 512, 768, 1024, 2048)


@functools.cache
def source() -> str:
    return resources.files(__package__).joinpath("rnn.cu").read_text()


@dataclasses.dataclass(frozen=True)
class Variant:
    kind: str  # "forward" / "backward"
    cell: str
    dtype: str  # "bfloat16" / "float16" / "float32"
    head_dim: int
    shape: Shape

    @property
    def name(self) -> str:
        """The name expression NVRTC instantiates, e.g. ``rnn_forward<0, frnn::BF16, 64, 1, 4, 16>``."""
        if self.shape.grid > 1:  # over a cooperative grid
            return (f"rnn_{self.kind}_g<{CELL_IDS[self.cell]}, {ELEMENT_TYPES[self.dtype]}, {self.head_dim}, "
                    f"{self.head_dim // self.shape.grid}, {self.shape.warps}, {self.shape.kr}, {self.shape.ck}, "
                    f"{self.shape.stages}>")
        if self.shape.ksplit:  # over a cluster, K split over the warps
            return (f"rnn_forward_s<{CELL_IDS[self.cell]}, {ELEMENT_TYPES[self.dtype]}, {self.head_dim}, "
                    f"{self.shape.cluster}, {self.shape.warps // self.shape.ksplit}, {self.shape.ksplit}, "
                    f"{self.shape.kr}, {self.shape.rows}>")
        kernel = f"rnn_{self.kind}_t" if self.shape.trans else f"rnn_{self.kind}"
        if self.kind == "backward" and self.shape.cluster > 1:
            kernel = "rnn_backward_c"
        cluster = f", {self.shape.cluster}" if self.shape.cluster > 1 else ""
        cluster += f", {self.shape.ksm}" if self.shape.ksm else ""
        return (f"{kernel}<{CELL_IDS[self.cell]}, {ELEMENT_TYPES[self.dtype]}, {self.head_dim}, "
                f"{self.shape.nt}, {self.shape.stages}, {self.shape.rows}{cluster}>")

    @property
    def threads(self) -> int:
        return 32 * self.shape.warps


# Batch rows per CTA: 16 (the MMA's M) or 8 (rows 8..15 of the MMA zero: half the loads, the cell math and the
# stores per thread, same MMAs) — the launch picks 8 where the extra CTAs still fit on the SMs; rnn_forward_s also 1 to
# 7 (less to exchange per step; the launch picks the fewest waves of clusters, then the fewest rows).
ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 16)


def variant(kind: str, cell: str, dtype: str, head_dim: int, limits: Limits, rows: int = 16) -> Variant | str:
    """The variant a call needs on a device with ``limits``, or why there is none."""
    if cell not in CELL_IDS:
        return f"cell {cell!r} has no CUDA kernel"
    if dtype not in ELEMENT_TYPES:
        return f"dtype {dtype} is not supported (bfloat16, float16, float32)"
    if head_dim not in HEAD_DIMS:  # 80, 96, 112 too: compile-all (the no-spill guarantee) covers these only
        return f"head_dim {head_dim} is not one of {list(HEAD_DIMS)}"
    shape = kernel_shape(kind, cell, head_dim, dtype, limits, rows)
    if isinstance(shape, str):
        return shape
    return Variant(kind, cell, dtype, head_dim, shape)


def shipped_variants(arch: str) -> tuple[list[Variant], list[str]]:
    """Every variant the resource model admits for ``arch`` (all cells, dtypes, head sizes, both kernels), and
    a line for each combination it refuses (those calls go to another backend)."""
    limits = ARCH_LIMITS.get(arch)
    if limits is None:
        raise ValueError(f"arch: expected one of {sorted(ARCH_LIMITS)}, got {arch!r}")
    found, refused = [], []
    for cell in CELLS:
        for dtype in ELEMENT_TYPES:
            for head_dim in HEAD_DIMS:
                for kind in KINDS:
                    for rows in ROWS:
                        v = variant(kind, cell, dtype, head_dim, limits, rows)
                        if isinstance(v, str) and rows < 8:
                            continue  # fewer rows are an option of rnn_forward_s, not a gap
                        if isinstance(v, str):
                            refused.append(f"{kind} {cell} {dtype} D={head_dim} rows={rows}: {v}")
                        else:
                            found.append(v)
    return found, refused


def compile_variant(v: Variant, arch: str, *, cache: bool = True):
    """Compile ``v`` for ``arch`` (through the cubin cache): a ``nvrtc.CompiledKernel``."""
    from .nvrtc import compile_kernel

    return compile_kernel(source(), v.name, arch, cache=cache)
