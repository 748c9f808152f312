"""Check that a change to the CUDA backend leaves every shipped kernel's machine code as it was (no GPU needed).

Compiles every variant the cuda backend ships for each architecture (NVRTC, no cubin cache: a fresh cache
directory per run) and records per variant a hash of its executable code — the ``.text.*`` sections of the cubin
(ELF), whose names follow the kernel's (mangled) name but whose bytes are the SASS — with ptxas' registers and
spills. Names may change; the code must not.

    # the manifest of a tree (e.g. the commit before a change, unpacked with git archive)
    python benchmarks/compare_cubins.py save /tmp/before before.json
    # compare another tree (or a second manifest) against it: exit 1 where any variant's code differs
    python benchmarks/compare_cubins.py compare before.json .
    python benchmarks/compare_cubins.py compare before.json after.json

A variant is identified by what a call asks for — (arch, kernel kind, cell, dtype, head size, batch rows per
CTA) — not by its template name. The tree's ``fusedrnn.backends.cuda.kernels`` provides ``shipped_variants(arch)``
and ``compile_variant(variant, arch, cache=False)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHES = ("sm_80", "sm_90a")


def text_sections(cubin: bytes) -> dict[str, bytes]:
    """The ``.text.*`` sections of an ELF64 little-endian cubin, by name."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2 or cubin[5] != 1:
        raise ValueError("not an ELF64 little-endian cubin")
    (shoff,) = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def name(offset: int) -> str:
        end = cubin.index(b"\0", names_at + offset)
        return cubin[names_at + offset : end].decode()

    found = {}
    for sh_name, sh_type, _flags, _addr, offset, size, *_ in headers:
        section = name(sh_name)
        if section.startswith(".text.") and sh_type != 8:  # 8: SHT_NOBITS
            found[section] = cubin[offset : offset + size]
    return found


def code_hash(cubin: bytes) -> str:
    """SHA-256 over the code of every .text section, in a name-independent order."""
    parts = sorted(hashlib.sha256(code).hexdigest() for code in text_sections(cubin).values())
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _rows(v) -> int:
    return v.rows if hasattr(v, "rows") else v.shape.rows


def _key(arch: str, v) -> str:
    return f"{arch} {v.kind} {v.cell} {v.dtype} D={v.head_dim} rows={_rows(v)}"


def _compile(job):
    arch, index = job
    from fusedrnn.backends.cuda import kernels

    v = kernels.shipped_variants(arch)[0][index]
    compiled = kernels.compile_variant(v, arch, cache=False)
    return _key(arch, v), {
        "name": v.name,
        "code": code_hash(compiled.cubin),
        "registers": compiled.registers,
        "spill_stores": compiled.spill_stores,
        "spill_loads": compiled.spill_loads,
    }


def _worker(arches: list[str], jobs: int) -> dict[str, dict]:
    """Runs inside the tree under test (its fusedrnn first on sys.path)."""
    from fusedrnn.backends.cuda import kernels

    work = [(arch, i) for arch in arches for i in range(len(kernels.shipped_variants(arch)[0]))]
    manifest: dict[str, dict] = {}
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        for done, (key, entry) in enumerate(pool.map(_compile, work, chunksize=4), 1):
            if key in manifest:
                raise RuntimeError(f"two shipped variants answer the same call: {key}")
            manifest[key] = entry
            if done % 50 == 0:
                print(f"  {done} of {len(work)} compiled", file=sys.stderr, flush=True)
    return manifest


def manifest_of(tree: Path, arches: list[str], jobs: int) -> dict[str, dict]:
    """Compile every shipped variant of ``tree`` in a subprocess with a fresh cubin cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "FUSEDRNN_CACHE_DIR": cache, "PYTHONPATH": str(tree.resolve())}
        script = (
            f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            "import compare_cubins as c; "
            f"json.dump(c._worker({arches!r}, {jobs}), sys.stdout)"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=tree, check=True, capture_output=True, text=True
        )
        sys.stderr.write(out.stderr)
    return json.loads(out.stdout)


def _load(source: str, arches: list[str], jobs: int) -> dict[str, dict]:
    path = Path(source)
    if path.is_file():
        return json.loads(path.read_text())["variants"]
    return manifest_of(path, arches, jobs)


def compare(before: dict[str, dict], after: dict[str, dict]) -> int:
    """Print each difference; 1 if any variant's code, registers or spills differ, or one side lacks it."""
    bad = 0
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            bad += 1
            print(f"{key}: only {'after' if a is None else 'before'} ships it")
            continue
        diffs = [field for field in ("code", "registers", "spill_stores", "spill_loads") if a[field] != b[field]]
        if diffs:
            bad += 1
            print(
                f"{key}: {', '.join(diffs)} differ ({a['name']} -> {b['name']}; registers {a['registers']} -> "
                f"{b['registers']}, spills {a['spill_stores']} -> {b['spill_stores']} B)"
            )
    arches = sorted({key.split()[0] for key in before.keys() | after.keys()})
    for arch in arches:
        keys = [k for k in before.keys() | after.keys() if k.startswith(arch + " ")]
        same = sum(
            1
            for k in keys
            if k in before
            and k in after
            and before[k]["code"] == after[k]["code"]
            and before[k]["registers"] == after[k]["registers"]
        )
        spills = sum(1 for k in keys if k in after and after[k]["spill_stores"] > 0)
        print(f"{arch}: {same} of {len(keys)} variants identical (code and registers); {spills} spill")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    save = sub.add_parser("save", help="compile a tree's shipped variants and write their manifest")
    save.add_argument("tree", type=Path)
    save.add_argument("out", type=Path)
    cmp_ = sub.add_parser("compare", help="compare two trees or manifests (exit 1 on any difference)")
    cmp_.add_argument("before")
    cmp_.add_argument("after")
    for p in (save, cmp_):
        p.add_argument("--arch", action="append", choices=ARCHES, help="default: sm_80 and sm_90a")
        p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    arches = args.arch or list(ARCHES)
    if args.command == "save":
        variants = manifest_of(args.tree, arches, args.jobs)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.tree, capture_output=True, text=True)
        args.out.write_text(
            json.dumps(
                {"tree": str(args.tree), "commit": commit.stdout.strip() or None, "variants": variants},
                indent=1,
                sort_keys=True,
            )
        )
        print(f"{len(variants)} variants -> {args.out}")
        return 0
    return compare(_load(args.before, arches, args.jobs), _load(args.after, arches, args.jobs))


if __name__ == "__main__":
    sys.exit(main())
