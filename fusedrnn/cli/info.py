"""Device, versions, backends and the launch configuration for one call shape (``python -m fusedrnn info``).

    python -m fusedrnn info --cell lstm --heads 12 --head-dim 64 --batch 16 --steps 1024 --dtype bfloat16
    python -m fusedrnn info --json

Works without a GPU and without triton installed: what is missing is reported, with the reason.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import importlib.metadata
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

import torch

import fusedrnn

from ..backends import BACKEND_ENV, Call, availability, backend_names, compile_availability, get_backend, select_backend
from ..backends.cuda import cuda_core_available, nvrtc
from ..backends.cuda.kernels import Variant, compile_variant, shipped_variants
from ..backends.cuda.resources import ARCH_LIMITS
from ..backends.fused import sm_count
from ..cells import cell_names, get_cell
from .args import Parser, positive, program
from .args import device as device_arg

__all__ = ["versions", "devices", "triton_cache", "backend_report", "launch_report", "collect", "main"]

# Environment variables that change what fusedrnn runs (README's table); reported when set.
ENV_VARS = (
    BACKEND_ENV,
    "TRITON_INTERPRET",
    "TRITON_CACHE_DIR",
    "FUSEDRNN_ALTERNATING_GRAPHS",
    "FUSEDRNN_ALTERNATING_F32_GEMM",
    "FUSEDRNN_ALTERNATING_PREFETCH",
    "FUSEDRNN_CACHE_DIR",
    "CUDA_VISIBLE_DEVICES",
)
# Packages that can provide NVRTC (the CUDA backend compiles with it at run time)
NVRTC_DISTRIBUTIONS = (
    "cuda-bindings",
    "cuda-python",
    "cuda-core",
    "nvidia-cuda-nvrtc",
    "nvidia-cuda-nvrtc-cu12",
    "nvidia-cuda-nvrtc-cu13",
)


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvrtc_version() -> str:
    """NVRTC's own version through cuda-bindings, or why it cannot be read."""
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc  # cuda-python before the cuda.bindings split
        except ImportError:
            return "not installed (no cuda.bindings: pip install cuda-bindings nvidia-cuda-nvrtc)"
    try:
        result = nvrtc.nvrtcVersion()
        major, minor = result[1], result[2]  # (error code, major, minor)
        return f"{major}.{minor}"
    except Exception as error:  # the library loads lazily: any failure means "not usable"
        return f"cuda.bindings installed, but NVRTC cannot be loaded: {type(error).__name__}: {error}"


def versions() -> dict[str, object]:
    """Versions of Python, fusedrnn, torch (with its CUDA and cuDNN), triton and NVRTC; None where missing."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError as error:
        triton_version = f"not installed ({error})"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    packages = {name: v for name in NVRTC_DISTRIBUTIONS if (v := _distribution_version(name))}
    return {
        "python": platform.python_version(),
        "fusedrnn": fusedrnn.__version__,
        "fusedrnn_path": str(Path(fusedrnn.__file__).parent),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        "triton": triton_version,
        "nvrtc": _nvrtc_version(),
        "nvrtc_packages": packages,
    }


def devices() -> list[dict[str, object]]:
    """Every visible CUDA device: name, compute capability, SMs, memory (and on-chip limits where torch has them)."""
    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        entry = {
            "index": index,
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "sms": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
        }
        for key, attr in (
            ("shared_memory_per_block_optin", "shared_memory_per_block_optin"),
            ("registers_per_sm", "regs_per_multiprocessor"),
            ("l2_cache_bytes", "L2_cache_size"),
        ):
            if hasattr(props, attr):
                entry[key] = getattr(props, attr)
        found.append(entry)
    return found


def triton_cache() -> dict[str, object]:
    """Triton's kernel cache: directory (TRITON_CACHE_DIR or ~/.triton/cache), entries and bytes on disk."""
    directory = os.environ.get("TRITON_CACHE_DIR")
    if not directory:
        try:
            from triton import knobs

            directory = knobs.cache.dir
        except (ImportError, AttributeError):  # triton missing, or older than its knobs module
            directory = str(Path.home() / ".triton" / "cache")
    path = Path(directory)
    if not path.is_dir():
        return {"dir": str(path), "exists": False, "entries": 0, "bytes": 0}
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    entries = sum(1 for f in path.iterdir() if f.is_dir())  # one directory per compiled kernel variant
    return {"dir": str(path), "exists": True, "entries": entries, "bytes": size}


def backend_report(call: Call) -> dict[str, object]:
    """Each backend's answer for ``call`` (None: can run it), backends that failed to load, and auto's pick."""
    report: dict[str, object] = {"backends": {}, "not_loaded": {}, "auto": None, "auto_reason": None}
    for name, reason in availability(call).items():
        report["backends"][name] = {
            "available": reason is None,
            "reason": reason,
            "description": get_backend(name).description,
        }
    registered = set(backend_names())
    from .. import backends as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in registered:  # backend modules register their own name; helpers register none
            try:
                importlib.import_module(f"{package.__name__}.{module.name}")
            except ImportError as error:
                report["not_loaded"][module.name] = f"{type(error).__name__}: {error}"
    try:
        report["auto"] = select_backend("auto", call).name
    except ValueError as error:
        report["auto_reason"] = str(error)
    forced = os.environ.get(BACKEND_ENV, "").strip()
    if forced and forced != "auto":
        report["forced_by_env"] = forced
    return report


def launch_report(call: Call) -> dict[str, object]:
    """What the Triton and alternating backends would launch for ``call`` (where triton is importable)."""
    report: dict[str, object] = {}
    B, T, NH, D, cell = call.batch, call.steps, call.num_heads, call.head_dim, call.cell
    hidden = NH * D
    saved = (cell.num_gates_b + cell.num_states) * 4  # float32 slots and states per (batch, step, unit)
    try:
        from ..backends.triton import launch as triton_launch
    except ImportError as error:
        return {"error": f"triton is not importable: {error}"}
    tile = triton_launch.tiling(B, NH, D, call.device)
    tiles = -(-B // tile["BLOCK_B"])
    sms = sm_count(call.device.index or 0) if call.device.type == "cuda" else None
    report["triton"] = {
        **tile,
        "grid": [NH, tiles],
        "programs": NH * tiles,
        "sms": sms,
        "r_bytes_per_head": triton_launch.r_bytes(cell.num_gates_r, D, call.dtype),
        "saved_for_backward_bytes": saved * B * T * hidden if call.requires_grad else 0,
        "fits": D <= triton_launch.MAX_HEAD_DIM,
    }
    try:
        from ..backends.alternating import launch as alt_launch
    except ImportError as error:
        report["alternating"] = {"error": str(error)}
        return report
    elements = B * NH * D
    gemm = alt_launch.gemm_mode(call.dtype, call.device) if call.dtype != torch.float64 else None
    tile = None
    if call.dtype != torch.float64:
        tile = alt_launch.forward_tile(cell.num_gates_r, B, NH, D, call.dtype, call.device)
    report["alternating"] = {
        "forward_fused_tile": None if tile is None else dataclasses.asdict(tile),
        "gemm": f"torch.bmm over {NH} heads: [{B}, {D}] x [{D}, {cell.num_gates_r * D}]",
        "gemm_mode": gemm,
        "pointwise_programs": -(-elements // alt_launch.BLOCK),
        "block": alt_launch.BLOCK,
        "num_warps": alt_launch.NUM_WARPS,
        "cuda_graph": call.device.type == "cuda" and os.environ.get(alt_launch.GRAPHS_ENV, "1") != "0",
        "saved_for_backward_bytes": saved * B * T * hidden if call.requires_grad else 0,
    }
    return report


def _compile_one(job: tuple[Variant, str]) -> tuple[Variant, str, object]:
    v, arch = job
    try:
        return v, arch, compile_variant(v, arch)
    except Exception as error:  # noqa: BLE001 -- reported per variant, the run goes on
        return v, arch, error


def compile_all(arches: list[str], jobs: int) -> int:
    """``--compile-all``: every shipped CUDA variant for each arch; 1 if any fails or spills, else 0."""
    missing = cuda_core_available()
    if missing is not None:
        print(f"cannot compile: {missing}", file=sys.stderr)
        return 1
    work = []
    for arch in arches:
        found, refused = shipped_variants(arch)
        work += [(v, arch) for v in found]
        for line in refused:
            print(f"{arch}  not shipped  {line}")
    print(
        f"compiling {len(work)} variants for {', '.join(arches)} with {jobs} processes (cache: {nvrtc.cache_dir()})",
        flush=True,
    )
    bad = 0
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        for v, arch, result in pool.map(_compile_one, work):
            if isinstance(result, Exception):
                bad += 1
                print(f"{arch}  FAILED  {v.name}: {result}", flush=True)
                continue
            status = "SPILLS" if result.spills else "ok" if result.registers >= 0 else "NO-REPORT"
            bad += status != "ok"
            print(
                f"{arch}  {status:6s}  {v.name:44s} registers {result.registers:3d} (model {v.shape.registers:3d})"
                f"  spill {result.spill_stores}/{result.spill_loads} B  smem {v.shape.smem // 1024} KB"
                f"  {v.threads} threads{'  cached' if result.from_cache else ''}",
                flush=True,
            )
    print(f"{len(work) - bad} of {len(work)} variants compiled without spills in {time.perf_counter() - start:.1f} s")
    return 1 if bad else 0


def cuda_report(call: Call) -> dict[str, object]:
    """The cuda backend's variants for ``call``: launch shape (from the resource model) or why none."""
    if call.device.type != "cuda" or call.dtype == torch.float64:
        return {"error": "needs a CUDA device and a 16-bit or float32 dtype"}
    from ..backends.cuda import launch as cuda_launch
    from ..backends.cuda.planner import device_facts, plan_kernel

    report: dict[str, object] = {"arch": cuda_launch.arch_of(call.device)}
    facts = device_facts(call.device.index or 0)
    kinds = ("forward", "backward") if call.requires_grad else ("forward",)
    for kind in kinds:  # each kernel's answer, the refused one's reason too
        v = plan_kernel(kind, call.cell.name, call.head_dim, call.dtype, call.batch, call.num_heads, facts)
        report[kind] = v if isinstance(v, str) else variant_entry(v, call)
    return report


def variant_entry(v: Variant, call: Call) -> dict[str, object]:
    """One cuda variant's launch for ``call``: heads x batch tiles x CTAs per head, and the family's shape."""
    return {
        "kernel": v.name,
        "family": v.family,
        "heads": call.num_heads,
        "batch_tiles": -(-call.batch // v.shape.rows),
        "ctas_per_head": v.shape.ctas_per_head,
        "threads": v.threads,
        "shape": dataclasses.asdict(v.shape),
    }


def collect(call: Call) -> dict[str, object]:
    """Everything ``info`` reports, as one JSON-serialisable dict."""
    return {
        "versions": versions(),
        "devices": devices(),
        "call": {
            "cell": call.cell.name,
            "num_heads": call.num_heads,
            "head_dim": call.head_dim,
            "hidden": call.num_heads * call.head_dim,
            "batch": call.batch,
            "steps": call.steps,
            "dtype": str(call.dtype).removeprefix("torch."),
            "device": str(call.device),
            "requires_grad": call.requires_grad,
        },
        "backends": backend_report(call),
        "compile": compile_availability(),  # backends that compile their kernels here, no GPU needed: None = can
        "launch": {"cuda": cuda_report(call), **launch_report(call)},
        "triton_cache": triton_cache(),
        "environment": {name: os.environ[name] for name in ENV_VARS if name in os.environ},
    }


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def format_report(data: dict[str, object]) -> str:
    """The human-readable form of ``collect``'s dict."""
    v, lines = data["versions"], []
    lines.append(f"fusedrnn {v['fusedrnn']} ({v['fusedrnn_path']})")
    lines.append(
        f"python {v['python']}, torch {v['torch']} (CUDA {v['torch_cuda'] or 'none'}, "
        f"cuDNN {v['cudnn'] or 'none'}), triton {v['triton']}"
    )
    packages = ", ".join(f"{k} {val}" for k, val in v["nvrtc_packages"].items())
    lines.append(f"NVRTC: {v['nvrtc']}" + (f" [{packages}]" if packages else ""))
    for name, reason in data["compile"].items():
        lines.append(
            f"{name} kernels: "
            + (
                "can be compiled here (no GPU needed: info --compile-all)"
                if reason is None
                else f"cannot be compiled here: {reason}"
            )
        )
    if data["devices"]:
        for d in data["devices"]:
            extra = ""
            if "shared_memory_per_block_optin" in d:
                extra += f", {d['shared_memory_per_block_optin'] // 1024} KB shared memory per block"
            if "l2_cache_bytes" in d:
                extra += f", {d['l2_cache_bytes'] // 2**20} MB L2"
            lines.append(
                f"device cuda:{d['index']}: {d['name']}, compute capability {d['capability']}, "
                f"{d['sms']} SMs, {d['memory_gib']} GiB{extra}"
            )
    else:
        lines.append(
            "device: no CUDA device (torch.cuda.is_available() is False): fusedrnn runs the reference "
            "backend on the CPU"
        )
    c = data["call"]
    lines.append("")
    lines.append(
        f"call: {c['cell']}, {c['num_heads']} heads x {c['head_dim']} (hidden {c['hidden']}), "
        f"B {c['batch']}, T {c['steps']}, {c['dtype']}, {c['device']}, "
        + ("training (forward + backward)" if c["requires_grad"] else "inference (forward only)")
    )
    b = data["backends"]
    lines.append("backends:")
    for name, entry in b["backends"].items():
        state = "can run it" if entry["available"] else f"cannot: {entry['reason']}"
        lines.append(f"  {name:12s} {state}")
    for name, reason in b["not_loaded"].items():
        lines.append(f"  {name:12s} not loaded: {reason}")
    if b["auto"]:
        forced = f" (forced by {BACKEND_ENV}={b['forced_by_env']})" if "forced_by_env" in b else ""
        lines.append(f"  auto picks: {b['auto']}{forced}")
    else:
        lines.append(f"  auto picks nothing: {b['auto_reason']}")
    launch = data["launch"]
    cu = launch.get("cuda", {})
    if "error" in cu:
        lines.append(f"cuda launch: {cu['error']}")
    for kind in ("forward", "backward"):
        entry = cu.get(kind)
        if isinstance(entry, str):
            lines.append(f"cuda {kind}: refused: {entry}")
        elif entry:
            shape = entry["shape"]
            lines.append(
                f"cuda {kind} ({cu['arch']}): {entry['kernel']}, grid {entry['heads']} heads x "
                f"{entry['batch_tiles']} tiles of {shape['rows']} rows x {entry['ctas_per_head']} CTAs "
                f"per head, {entry['threads']} threads, {entry['family']} family, "
                + (f"{shape['stages']}-stage prefetch, " if "stages" in shape else "")
                + f"{shape['smem'] // 1024} KB shared memory, ~{shape['registers']} registers per thread "
                "(model)"
            )
    if "error" in launch:
        lines.append(f"launch configuration: {launch['error']}")
    else:
        t = launch["triton"]
        sms = f"{t['sms']} SMs" if t["sms"] else "no GPU: batch tile chosen as if SMs were unlimited"
        note = "" if t["fits"] else " (head_dim too large: the Triton backend refuses this call)"
        lines.append(
            f"triton launch{note}: grid {t['grid'][0]} heads x {t['grid'][1]} batch tiles = "
            f"{t['programs']} programs ({sms}); BLOCK_B {t['BLOCK_B']}, BLOCK_D {t['BLOCK_D']}, "
            f"{t['num_warps']} warps; R on chip {t['r_bytes_per_head'] // 1024} KB per head"
        )
        if t["saved_for_backward_bytes"]:
            lines.append(
                f"  saved for backward: {_mb(t['saved_for_backward_bytes'])} (float32 gate "
                "pre-activations and states, per call)"
            )
        a = launch.get("alternating", {})
        if "error" in a:
            lines.append(f"alternating: {a['error']}")
        elif a:
            graph = "in one CUDA graph" if a["cuda_graph"] else "eagerly (no CUDA graph)"
            if a["forward_fused_tile"]:
                tile = ", ".join(f"{k} {v}" for k, v in a["forward_fused_tile"].items())
                lines.append(f"alternating forward: one fused kernel per step (R·h and the cell; {tile}); backward:")
            lines.append(
                f"alternating launch: per step {a['gemm']} (GEMM mode {a['gemm_mode']}), then one "
                f"pointwise kernel of {a['pointwise_programs']} programs x {a['block']} elements "
                f"({a['num_warps']} warps); the T-step loop runs {graph}"
            )
    cache = data["triton_cache"]
    if cache["exists"]:
        lines.append(f"triton kernel cache: {cache['dir']}: {cache['entries']} entries, {_mb(cache['bytes'])}")
    else:
        lines.append(f"triton kernel cache: {cache['dir']} (empty: nothing compiled yet)")
    if data["environment"]:
        lines.append("environment: " + ", ".join(f"{k}={val}" for k, val in data["environment"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog=program("info"), description=__doc__.splitlines()[0])
    shape = parser.add_argument_group("call shape (the launch configuration and the backends are for this call)")
    shape.add_argument("--cell", default="lstm", choices=cell_names())
    shape.add_argument("--heads", type=positive, default=12, help="number of heads NH (default 12)")
    shape.add_argument("--head-dim", type=positive, default=64, help="head size D (default 64)")
    shape.add_argument("--batch", type=positive, default=16, help="batch size B (default 16)")
    shape.add_argument("--steps", type=positive, default=1024, help="sequence length T (default 1024)")
    shape.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32", "float64"])
    shape.add_argument("--device", type=device_arg, help="cuda, cuda:N or cpu (default: cuda when available)")
    shape.add_argument("--inference", action="store_true", help="forward only (default: training, forward + backward)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    build = parser.add_argument_group("CUDA backend kernels (no GPU needed)")
    build.add_argument(
        "--compile-all",
        action="store_true",
        help="compile every kernel variant the cuda backend ships for --arch into the cubin cache, one "
        "line per variant (registers, spill bytes); exit 1 if any fails to compile or spills",
    )
    build.add_argument(
        "--arch",
        action="append",
        choices=sorted(ARCH_LIMITS),
        help="target of --compile-all (repeatable; default sm_80 and sm_90a)",
    )
    build.add_argument(
        "--jobs", type=positive, default=os.cpu_count() or 1, help="parallel compilations (default: CPUs)"
    )
    args = parser.parse_args(argv)
    if args.compile_all:
        return compile_all(args.arch or ["sm_80", "sm_90a"], args.jobs)
    if args.arch:
        parser.error("--arch goes with --compile-all")

    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    call = Call(
        get_cell(args.cell),
        args.batch,
        args.steps,
        args.heads,
        args.head_dim,
        getattr(torch, args.dtype),
        device,
        not args.inference,
    )
    data = collect(call)
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        print()
    else:
        print(format_report(data))
    return 0
