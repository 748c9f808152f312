"""Run-time compilation of CUDA C++ to cubin with NVRTC, and the on-disk cubin cache.

No host compiler and no torch C++ extension: NVIDIA's ``cuda-core`` package drives NVRTC (``Program`` ->
cubin), which runs without a GPU, so CI compiles every variant for every architecture it ships.

Cache: one directory (``FUSEDRNN_CACHE_DIR``, default ``~/.cache/fusedrnn``, subfolder ``cubin``), one file per
key = SHA-256 of (source, kernel name, architecture, options, NVRTC version, this module's format version):
``<key>.entry``, a JSON line (mangled name, resource report, log, the cubin's SHA-256) and the cubin after it.
An entry is written whole to a temporary file and renamed into place (``os.replace``, atomic on POSIX and
Windows), so a reader sees a complete entry or none, and no lock is needed: two processes asking for the same
new variant at once both compile it (the same bytes) and the last rename wins; nothing is left behind but the
entry. An entry whose cubin does not match its checksum (a damaged disk) is compiled again. A cache that cannot
be written (read-only home) only costs the compilation next time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from pathlib import Path

__all__ = ["CompiledKernel", "CompileError", "compile_kernel", "cache_dir", "nvrtc_version", "CACHE_ENV"]

CACHE_ENV = "FUSEDRNN_CACHE_DIR"
_FORMAT = 2  # bump when the entry layout or the report changes
LOGGER = logging.getLogger("fusedrnn")


class CompileError(RuntimeError):
    """NVRTC rejected a source; the message holds its log (file:line: error ...)."""


@dataclasses.dataclass(frozen=True)
class CompiledKernel:
    """A compiled kernel: the cubin, the mangled symbol to load, and ptxas' report for it."""

    cubin: bytes
    symbol: str  # the lowered (mangled) name of ``name``
    name: str  # as asked for, e.g. "rnn_forward<0, 64>"
    arch: str
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    stack_frame: int  # bytes
    log: str
    from_cache: bool

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "fusedrnn")
    return Path(root) / "cubin"


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library cuda-core uses."""
    from cuda.bindings import nvrtc

    err, major, minor = nvrtc.nvrtcVersion()
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"nvrtcVersion failed: {err}")
    return major, minor


def _key(source: str, name: str, arch: str, options: tuple[str, ...]) -> str:
    text = json.dumps([_FORMAT, source, name, arch, list(options), list(nvrtc_version())])
    return hashlib.sha256(text.encode()).hexdigest()


_REPORT = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack_frame": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def _resources(log: str, symbol: str) -> dict[str, int]:
    """ptxas' report (-v) for ``symbol``: registers, stack frame and spill bytes (-1 where the log has none)."""
    # ptxas prints a "Compiling entry function '<symbol>'" block per kernel; read the one of ours
    start = log.find(f"'{symbol}'")
    block = log[start:] if start >= 0 else log
    end = block.find("Compiling entry function", 1)
    block = block if end < 0 else block[:end]
    found = {}
    for field, pattern in _REPORT.items():
        match = pattern.search(block)
        # -1: not reported. Seen on the device machine: NVRTC returned an empty log when the compiling process
        # had a CUDA context (torch's); the same variant compiled without one reports everything.
        found[field] = int(match.group(1)) if match else -1
    return found


def _compile(source: str, name: str, arch: str, options: tuple[str, ...]) -> tuple[bytes, str, str]:
    from cuda.core import Program, ProgramOptions

    program_options = ProgramOptions(arch=arch, std="c++17", ptxas_options=["-v"], **_option_fields(options))
    log = io.StringIO()
    try:
        code = Program(source, code_type="c++", options=program_options).compile(
            "cubin", name_expressions=(name,), logs=log
        )
    except Exception as error:  # cuda-core raises its own error types with NVRTC's log in the message
        raise CompileError(f"NVRTC could not compile {name} for {arch}: {error}\n{log.getvalue()}") from error
    symbol = code.symbol_mapping[name]
    symbol = symbol.decode() if isinstance(symbol, bytes) else symbol
    return bytes(code.code), symbol, log.getvalue().replace("\x00", "")


def _option_fields(options: tuple[str, ...]) -> dict[str, object]:
    """Options as "key=value" strings of cuda.core ProgramOptions fields (e.g. "max_register_count=128")."""
    from cuda.core import ProgramOptions

    fields = {field.name for field in dataclasses.fields(ProgramOptions)}
    parsed: dict[str, object] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in fields or key in ("arch", "std", "ptxas_options"):
            raise ValueError(
                f"options: expected 'field=value' with a cuda.core ProgramOptions field other than arch, std and "
                f"ptxas_options, got {option!r}"
            )
        parsed[key] = int(value) if value.lstrip("-").isdigit() else value
    return parsed


def _read(path: Path) -> dict | None:
    """The entry at ``path`` (its JSON fields and "cubin"), or None when it is missing or damaged."""
    try:
        header, newline, cubin = path.read_bytes().partition(b"\n")
        meta = json.loads(header)
    except (OSError, ValueError):
        return None
    if not newline or not isinstance(meta, dict) or hashlib.sha256(cubin).hexdigest() != meta.get("cubin_sha256"):
        return None  # damaged: compile again
    meta["cubin"] = cubin
    return meta


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def compile_kernel(
    source: str, name: str, arch: str, options: tuple[str, ...] = (), *, cache: bool = True
) -> CompiledKernel:
    """Compile kernel ``name`` (a name expression: "kernel" or "kernel<args>") of ``source`` for ``arch``
    ("sm_80", "sm_90a", ...) to a cubin, from the cache when it holds the variant.

    ``options``: extra cuda.core ProgramOptions fields as "key=value" strings (part of the cache key).
    Raises CompileError with NVRTC's log when the source does not compile.
    """
    options = tuple(options)
    _option_fields(options)  # bad options fail before any cache lookup
    if not cache:
        cubin, symbol, log = _compile(source, name, arch, options)
        return CompiledKernel(cubin, symbol, name, arch, **_resources(log, symbol), log=log, from_cache=False)
    path = cache_dir() / f"{_key(source, name, arch, options)}.entry"
    meta = _read(path)
    from_cache = meta is not None
    if meta is None:
        cubin, symbol, log = _compile(source, name, arch, options)
        meta = {
            "symbol": symbol,
            "log": log,
            "cubin_sha256": hashlib.sha256(cubin).hexdigest(),
            **_resources(log, symbol),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, json.dumps(meta).encode() + b"\n" + cubin)  # json.dumps escapes every newline
        except OSError as error:  # the kernel is compiled all the same; only the next process pays again
            LOGGER.warning("fusedrnn: cannot write the cubin cache entry %s: %s", path, error)
        meta["cubin"] = cubin
    fields = {k: meta[k] for k in ("registers", "spill_stores", "spill_loads", "stack_frame")}
    return CompiledKernel(meta["cubin"], meta["symbol"], name, arch, **fields, log=meta["log"], from_cache=from_cache)
