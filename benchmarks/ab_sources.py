"""A/B timing of two trees of fusedrnn: each version in its own process, the versions interleaved over rounds.

A version is NAME=DIR[:STAGES]: DIR holds a copy of the package (DIR/fusedrnn, e.g. an older commit unpacked with
``git archive``), imported instead of this checkout; STAGES caps the cuda model's prefetch depth. Configs are
[BACKEND/]CELL:NHxD (backend cuda unless named), B = 16, T = 1024, bf16, fw (no autograd) and fwbw, timed as
``fusedrnn bench`` times them (fusedrnn.cli.bench.measure: CUDA events, median). Each process first runs 2 s of
GEMMs so that the clocks are up. Rows go to OUT (JSON lines); the table shows each version's fastest round and the
spread of its rounds (min, median, max minus min). The default configs are BENCHMARKS.md's protocol shapes.

With ``--one-process`` every version is imported into one process under its own package name (``fusedrnn_NAME``;
the trees import themselves relatively) and the versions alternate per config and mode, round by round, each first
in every other round, so that clock drift and the machine's state fall on all of them alike (STAGES is not
supported there).

    git archive BASE | tar -x -C /tmp/base
    python benchmarks/ab_sources.py ab.jsonl base=/tmp/base new=. --rounds 3
    python benchmarks/ab_sources.py ab.jsonl base=/tmp/base new=. --rounds 7 --one-process
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time

DEFAULT_CONFIGS = ",".join(
    [f"{c}:{h}" for h in ("12x64", "1x768") for c in ("lstm", "gru", "elman", "slstm")] + ["lstm:3x256"]
)


def _warm_up(device) -> None:
    """2 s of GEMMs, so that the clocks are up before the first timing."""
    import torch

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    start = time.time()
    while time.time() - start < 2.0:
        a @ a
    torch.cuda.synchronize()


def _case(bench, config: str, device):
    """The fw / fwbw callables of ``config`` ([BACKEND/]CELL:NHxD) from a version's fusedrnn.cli.bench."""
    import torch

    backend, _, spec = config.rpartition("/")
    cell, heads = spec.split(":")
    num_heads, head_dim = map(int, heads.split("x"))
    torch.manual_seed(0)
    return bench.fusedrnn_case(
        backend or "cuda", bench.Shape(cell, num_heads, head_dim, 16, 1024), torch.bfloat16, device
    )


def _record(out: str, row: dict, bench, case, device, target_ms: float) -> None:
    """Time ``case[row["mode"]]`` into row (or the error of a version that does not compile or run) and append it."""
    try:
        if isinstance(case, Exception):
            raise case
        row["ms"] = bench.measure(case[row["mode"]], device, min_reps=20, max_reps=200, target_ms=target_ms)["ms"]
    except Exception as error:  # recorded; the other versions go on
        row["error"] = str(error)[:300]
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def _child(name: str, path: str, configs: list[str], out: str) -> None:
    path, _, stages = path.partition(":")
    if not os.path.isdir(os.path.join(path, "fusedrnn")):
        raise SystemExit(f"version {name}: expected a directory holding fusedrnn/, got {path!r}")
    sys.path.insert(0, os.path.abspath(path))
    import torch

    from fusedrnn.backends.cuda import model
    from fusedrnn.cli import bench

    if stages:
        model.MAX_STAGES = int(stages)
    device = torch.device("cuda")
    _warm_up(device)
    for config in configs:
        case = _case(bench, config, device)
        for mode in ("fw", "fwbw"):
            _record(out, {"version": name, "config": config, "mode": mode}, bench, case, device, 300)


def _import_as(alias: str, path: str):
    """The fusedrnn package under ``path`` imported as ``alias`` (its modules import each other relatively)."""
    init = os.path.join(path, "fusedrnn", "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"version {alias}: expected a directory holding fusedrnn/, got {path!r}")
    spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[os.path.dirname(init)])
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[alias] = package
    spec.loader.exec_module(package)
    return importlib.import_module(alias + ".cli.bench")


def _one_process(versions: list[tuple[str, str]], configs: list[str], rounds: int, out: str) -> None:
    import torch

    benches = {name: _import_as(f"fusedrnn_{name}", path) for name, path in versions}
    device = torch.device("cuda")
    _warm_up(device)
    for config in configs:
        cases = {}
        for name, bench in benches.items():
            try:
                cases[name] = _case(bench, config, device)
            except Exception as error:  # a version that cannot build the case: its rows record why
                cases[name] = error
        for mode in ("fw", "fwbw"):
            for round_ in range(rounds):
                order = list(benches.items())
                for name, bench in order if round_ % 2 == 0 else order[::-1]:  # neither always first
                    row = {"version": name, "config": config, "mode": mode, "round": round_}
                    _record(out, row, bench, cases[name], device, 150)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        name, path, out, configs = sys.argv[2:6]
        _child(name, path, configs.split(","), out)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="JSON-lines file the rows are appended to")
    parser.add_argument("versions", nargs="+", help="NAME=DIR[:STAGES]")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated (default {DEFAULT_CONFIGS})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-process", action="store_true", help="all versions in one process, alternating")
    args = parser.parse_args(argv)
    versions = []
    for spec in args.versions:
        name, sep, path = spec.partition("=")
        if not sep:
            parser.error(f"versions: expected NAME=DIR, got {spec!r}")
        versions.append((name, path))
    if args.one_process:
        _one_process(versions, args.configs.split(","), args.rounds, args.out)
    else:
        for _ in range(args.rounds):
            for name, path in versions:
                subprocess.run([sys.executable, __file__, "--child", name, path, args.out, args.configs], check=False)
    rows = [json.loads(line) for line in open(args.out)]
    print("config mode " + " ".join(f"{name} (min, median, spread)" for name, _ in versions))
    for key in sorted({(r["config"], r["mode"]) for r in rows}):
        cells = []
        for name, _ in versions:
            times = sorted(
                r["ms"] for r in rows if (r["config"], r["mode"]) == key and r["version"] == name and "ms" in r
            )
            median = times[len(times) // 2] if times else 0.0
            cells.append(f"{times[0]:.3f} {median:.3f} +{times[-1] - times[0]:.3f}" if times else "error")
        print(*key, *cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
