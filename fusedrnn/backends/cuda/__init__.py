"""Backend ``cuda``: persistent fused CUDA kernels compiled at run time with NVRTC.

A head's R stays on chip for the whole sequence. Kernel families (docs/architecture.md): one CTA per (head, 8 or 16
batch rows) for D <= 128 (``cta``; ``transposed`` from D = 128); on sm_90 a thread-block cluster per head for
192–512 (``cluster``, the forward to 768 with part of R in shared memory) or the forward with K split over the
warps of a cluster (``split_k``); what no cluster holds (16-bit: those backwards, D = 1024 / 2048, every D >= 192 on
sm_80) over a cooperative grid (``grid``). ``planner.plan(call)`` picks the family and shape (model.py solves each
family's resource model for the device); kernels are compiled on first use through cuda-core and cached on disk
(nvrtc.py). Needs cuda-core, cuda-bindings and NVRTC (dependencies of fusedrnn on Linux x86_64 and aarch64) and a
GPU of compute capability >= 8.0; other heads go to ``triton`` or ``alternating``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util

import torch

from ..fused import fused_backend
from ..registry import Call, register_backend
from . import nvrtc
from .launch import backward, forward
from .planner import plan

_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# fusedrnn depends on these where NVIDIA ships wheels for them (pyproject.toml); elsewhere they are installed by hand
_INSTALL_HINT = "pip install cuda-core cuda-bindings cuda-pathfinder nvidia-cuda-nvrtc"


@functools.cache  # asked on every dispatch; what is installed does not change within a process
def cuda_core_available() -> str | None:
    """None when cuda-core can be imported and the NVRTC library loaded (kernels can be compiled, with or
    without a GPU), else why not."""
    for module in ("cuda.core", "cuda.bindings"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed ({_INSTALL_HINT})"
        except ImportError as error:
            return f"{module} cannot be imported: {error}"
    try:
        nvrtc.nvrtc_version()
    except Exception as error:  # cuda.bindings raises its own types when libnvrtc is missing or too old
        return f"the NVRTC library cannot be loaded ({type(error).__name__}: {error}; {_INSTALL_HINT})"
    return None


def _supports(call: Call) -> str | None:
    if call.device.type != "cuda":
        return f"needs a CUDA GPU (got device {call.device})"
    missing = cuda_core_available()
    if missing is not None:
        return missing
    if torch.cuda.get_device_capability(call.device) < (8, 0):
        return "needs a GPU of compute capability >= 8.0 (mma.sync on bf16, cp.async)"
    if call.dtype not in _DTYPES:
        return f"dtype {call.dtype} is not supported (bfloat16, float16, float32; float64 runs on 'reference')"
    found = plan(call)  # what the launch will run, so that what is supported is what runs
    if isinstance(found, str):
        return f"{found}; use 'triton' or 'alternating'"
    return None


CUDA = register_backend(
    dataclasses.replace(
        fused_backend(
            "cuda",
            30,
            _supports,
            forward,
            backward,
            "persistent fused CUDA kernels (NVRTC), R in registers, one CTA per (head, 8 or 16 rows) for "
            "D <= 128, a thread-block cluster per head beyond (sm_90), else a cooperative grid",
        ),
        can_compile=cuda_core_available,
    )
)
