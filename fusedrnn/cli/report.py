"""Tables, files and the plot of ``python -m fusedrnn bench`` results (the schema: fusedrnn.cli.bench).

Everything here reads rows only, so results measured on a GPU machine can be turned into markdown and a
PNG anywhere: ``python -m fusedrnn bench --plot-from bench.jsonl``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

from .plotting import pyplot

__all__ = [
    "load",
    "write_json",
    "write_csv",
    "write_markdown",
    "write_plot",
    "text_tables",
    "markdown",
    "summary",
    "tables",
]

FIELDS = (
    "impl",
    "kind",
    "cell",
    "num_heads",
    "head_dim",
    "hidden",
    "batch",
    "steps",
    "dtype",
    "mode",
    "status",
    "reason",
    "ms",
    "first_ms",
    "reps",
    "warmup",
    "estimate_ms",
    "peak_mb",
    "floor_ms",
    "floor_latency_ms",
    "floor_compute_ms",
    "floor_basis",
    "device",
    "time",
)
CELL_ORDER = ("lstm", "gru", "elman", "slstm")
CELL_TITLES = {"lstm": "LSTM", "gru": "GRU", "elman": "Elman", "slstm": "sLSTM"}
MODE_TITLES = {"fw": "forward", "fwbw": "forward + backward"}
KIND_ORDER = ("fusedrnn", "flashrnn", "cudnn", "torch-loop")
REFERENCE_POINT = {"batch": 16, "steps": 1024, "heads": (12, 64)}  # DESIGN.md §4; the plot's fixed values


def _key(row: dict) -> tuple:
    return (
        row["impl"],
        row["cell"],
        row["num_heads"],
        row["head_dim"],
        row["hidden"],
        row["batch"],
        row["steps"],
        row["dtype"],
        row["mode"],
    )


def load(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(runs, rows) from a ``bench.json`` or a ``bench.jsonl`` log; a row measured twice keeps its last value.
    Raises OSError for a file that cannot be read, UnicodeDecodeError (a ValueError) for one that is not UTF-8."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "rows" in data:
        runs, raw = list(data.get("runs", [])), list(data["rows"])
    else:
        runs, raw = [], []
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short when a run was killed mid-write
            if not isinstance(record, dict):
                continue  # not a record of ours
            kind = record.pop("record", "row")
            if kind == "run":
                runs.append(record)
            elif kind == "end" and runs:
                runs[-1].update(record)
            elif kind == "row":
                raw.append(record)
    rows = {}
    for row in raw:
        rows[_key(row)] = row
    # implementations of one kind keep the order in which the run measured them (fusedrnn: by priority)
    order = {impl: i for i, impl in reversed(list(enumerate(r["impl"] for r in raw)))}
    return runs, sorted(rows.values(), key=lambda r: (*_sort_key(r), order[r["impl"]]))


def _kind_rank(row: dict) -> int:
    return KIND_ORDER.index(row["kind"]) if row["kind"] in KIND_ORDER else len(KIND_ORDER)


def _sort_key(row: dict) -> tuple:
    cell = CELL_ORDER.index(row["cell"]) if row["cell"] in CELL_ORDER else len(CELL_ORDER)
    return (
        cell,
        row["cell"],
        row["mode"],
        row["head_dim"] or 0,
        row["hidden"],
        row["batch"],
        row["steps"],
        _kind_rank(row),
    )


def write_json(path: Path, runs: list[dict], rows: list[dict]) -> Path:
    path.write_text(json.dumps({"schema": 1, "runs": runs, "rows": rows}, indent=1) + "\n")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- tables ------------------------------------------------------------------------------------------------


def format_ms(ms: float) -> str:
    """Three significant digits, never in exponent notation."""
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(impl, dtype) columns in display order; an impl seen in several dtypes gets a column per dtype."""
    seen: dict[tuple[str, str], int] = {}
    for row in rows:  # first appearance, then grouped by kind (a stable sort)
        seen.setdefault((row["impl"], row["dtype"]), _kind_rank(row))
    return sorted(seen, key=seen.__getitem__)


def _label(column: tuple[str, str], columns: list[tuple[str, str]]) -> str:
    impl, dtype = column
    return impl if sum(1 for c in columns if c[0] == impl) == 1 else f"{impl} ({dtype})"


def tables(rows: list[dict]) -> list[dict]:
    """One table per (cell, mode): title, header, body rows (strings) and notes (why cells are empty)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["cell"], row["mode"])].append(row)
    result = []
    for (cell, mode), group in sorted(groups.items(), key=lambda item: _sort_key(item[1][0])):
        columns = _columns(group)
        kinds = {(r["impl"], r["dtype"]): r["kind"] for r in group}
        by_key = {
            (r["impl"], r["dtype"], r["num_heads"], r["head_dim"], r["hidden"], r["batch"], r["steps"]): r
            for r in group
        }
        points = sorted(
            {
                (r["num_heads"], r["head_dim"], r["hidden"], r["batch"], r["steps"])
                for r in group
                if r["kind"] != "cudnn"
            },
            key=lambda p: (p[1], p[2], p[3], p[4]),
        )
        covered = {(p[2], p[3], p[4]) for p in points}
        points += sorted(
            {
                (None, None, r["hidden"], r["batch"], r["steps"])
                for r in group
                if r["kind"] == "cudnn" and (r["hidden"], r["batch"], r["steps"]) not in covered
            },
            key=lambda p: p[2:],
        )
        cudnn_columns = [c for c in columns if kinds[c] == "cudnn"]
        has_fused = any(kinds[c] == "fusedrnn" for c in columns)
        # the floor of a point (bench --floors): any fusedrnn row's there (cuDNN rows carry a dense head's)
        point_floor = {
            (r["num_heads"], r["head_dim"], r["hidden"], r["batch"], r["steps"]): r["floor_ms"]
            for r in group
            if r.get("floor_ms") is not None and r["kind"] != "cudnn"
        }
        header = ["NH × D", "B", "T"] + (["floor"] if point_floor else []) + [_label(c, columns) for c in columns]
        if has_fused:
            header += [f"fastest fusedrnn vs {_label(c, columns)}" for c in cudnn_columns]
        body = []
        for NH, D, hidden, B, T in points:
            line = [f"{NH} × {D}" if NH else f"(hidden {hidden})", str(B), str(T)]
            if point_floor:
                found_floor = point_floor.get((NH, D, hidden, B, T))
                line.append("" if found_floor is None else format_ms(found_floor))
            values = {}
            for column in columns:
                heads = (None, None) if kinds[column] == "cudnn" else (NH, D)
                found = by_key.get((*column, *heads, hidden, B, T))
                if found is None:
                    line.append("")
                elif found["status"] == "ok":
                    values[column] = found["ms"]
                    peak = found.get("peak_mb")
                    line.append(format_ms(found["ms"]) + ("" if peak is None else f" ({peak / 1024:.2g} GB)"))
                else:
                    line.append("–" if found["status"] == "skipped" else "error")
            if has_fused:
                fused = [values[c] for c in columns if kinds[c] == "fusedrnn" and c in values]
                for column in cudnn_columns:
                    ok = fused and column in values
                    line.append(f"{values[column] / min(fused):.1f}×" if ok else "")
            body.append(line)
        reasons = Counter((r["impl"], r["status"], r["reason"]) for r in group if r["status"] != "ok")
        notes = [
            f"{impl} {status} ({count} row{'s' * (count > 1)}): {reason}"
            for (impl, status, reason), count in sorted(reasons.items(), key=lambda i: (i[0][0], str(i[0][2])))
        ]
        dtypes = sorted({r["dtype"] for r in group if r["kind"] != "cudnn"})
        title = (
            f"{CELL_TITLES.get(cell, cell)}, {MODE_TITLES.get(mode, mode)}"
            + (f" ({', '.join(dtypes)})" if dtypes else "")
            + ", ms per call"
        )
        result.append({"title": title, "header": header, "body": body, "notes": notes})
    return result


def _pick(values: list, preferred) -> object:
    """``preferred`` if it is among ``values``, else their median."""
    values = sorted(set(values))
    return preferred if preferred in values else values[len(values) // 2]


def summary(rows: list[dict]) -> dict | None:
    """One table of every cell and head split at one (B, T) (DESIGN.md §4's B = 16, T = 1024 where measured):
    per implementation "fw / fwbw" in ms. None when no row was measured."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    batch = _pick([r["batch"] for r in ok], REFERENCE_POINT["batch"])
    steps = _pick([r["steps"] for r in ok], REFERENCE_POINT["steps"])
    at = [r for r in rows if r["batch"] == batch and r["steps"] == steps]
    modes = [m for m in ("fw", "fwbw") if any(r["mode"] == m for r in at)]
    columns = _columns(at)
    kinds = {(r["impl"], r["dtype"]): r["kind"] for r in at}
    by_key = {(r["impl"], r["dtype"], r["cell"], r["num_heads"], r["head_dim"], r["hidden"], r["mode"]): r for r in at}
    points = sorted(
        {(r["cell"], r["num_heads"], r["head_dim"], r["hidden"]) for r in at if r["kind"] != "cudnn"},
        key=lambda p: (CELL_ORDER.index(p[0]) if p[0] in CELL_ORDER else 99, p[2]),
    )
    body = []
    for cell, NH, D, hidden in points:
        line = [CELL_TITLES.get(cell, cell), f"{NH} × {D}"]
        for column in columns:
            heads = (None, None) if kinds[column] == "cudnn" else (NH, D)
            values = []
            for mode in modes:
                row = by_key.get((*column, cell, *heads, hidden, mode))
                values.append("" if row is None else format_ms(row["ms"]) if row["status"] == "ok" else "–")
            line.append(" / ".join(values) if any(values) else "")
        body.append(line)
    title = f"Summary: B = {batch}, T = {steps}, ms per call ({' / '.join(modes)})"
    return {
        "title": title,
        "header": ["cell", "NH × D"] + [_label(c, columns) for c in columns],
        "body": body,
        "notes": [],
    }


def _aligned(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [
        max(len(header[i]), *(len(line[i]) for line in body)) if body else len(header[i]) for i in range(len(header))
    ]
    fmt = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in body]


def text_tables(rows: list[dict]) -> str:
    """The results as aligned plain-text tables, one per (cell, mode)."""
    if not rows:
        return "no results"
    parts = []
    for table in [summary(rows), *tables(rows)]:
        if table is None:
            continue
        parts.append(table["title"])
        parts += _aligned(table["header"], table["body"])
        parts += [f"  {note}" for note in table["notes"]]
        parts.append("")
    return "\n".join(parts)


def _run_lines(runs: list[dict]) -> list[str]:
    lines = []
    for i, run in enumerate(runs):
        v = run.get("versions", {})
        part = "" if len(runs) == 1 else f" (part {i + 1} of {len(runs)})"
        left = run.get("units_left")
        status = "" if not left else f"; stopped early, {left} rows left for --resume"
        lines.append(
            f"- Run{part}: {run.get('started', '?')} to {run.get('finished') or '?'}, "
            f"{run.get('seconds', '?')} s{status}."
        )
        lines.append(
            f"  Device: {run.get('device', '?')}; commit {run.get('commit') or 'unknown'}; torch "
            f"{v.get('torch')}, CUDA {v.get('torch_cuda')}, cuDNN {v.get('cudnn')}, triton {v.get('triton')}."
        )
        lines.append(f"  Command: `{run.get('command', '?')}`")
    if runs and runs[0].get("note"):
        lines.append(f"- {runs[0]['note']}")
    return lines


def markdown(runs: list[dict], rows: list[dict]) -> str:
    """Markdown for BENCHMARKS.md: provenance, a summary at one (B, T), then one table per (cell, mode) with
    speed-ups over cuDNN."""
    parts = _run_lines(runs)
    parts.append(
        "- Times are medians in ms per call; – : not run (see the notes under each table); the "
        "speed-up columns divide cuDNN's time by the fastest fusedrnn backend's. With bench --floors, \"floor\" is "
        "the least time the regime allows (measured barrier per step, or the tensor-core peak: "
        "fusedrnn/cli/floors.py); with --peak-memory, (x GB) is the call's peak allocation beyond its inputs."
    )
    for table in [summary(rows), *tables(rows)]:
        if table is None:
            continue
        parts += ["", f"### {table['title']}", ""]
        parts.append("| " + " | ".join(table["header"]) + " |")
        parts.append("|" + "|".join("---" if i < 1 else "---:" for i in range(len(table["header"]))) + "|")
        parts += ["| " + " | ".join(line) + " |" for line in table["body"]]
        if table["notes"]:
            parts.append("")
            parts += [f"- {note}" for note in table["notes"]]
    return "\n".join(parts) + "\n"


def write_markdown(path: Path, runs: list[dict], rows: list[dict]) -> Path:
    path.write_text(markdown(runs, rows))
    return path


# --- plot --------------------------------------------------------------------------------------------------


def write_plot(path: Path, rows: list[dict]) -> Path | None:
    """Time vs head size and vs batch size, one line per implementation, a row of panels per cell and,
    per mode, two panels; log scales. Returns None (with a message) without matplotlib or results."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        print("no measured rows: no plot")
        return None
    plt = pyplot()
    if plt is None:
        return None
    cells = sorted({r["cell"] for r in ok}, key=lambda c: CELL_ORDER.index(c) if c in CELL_ORDER else 99)
    modes = [m for m in ("fw", "fwbw") if any(r["mode"] == m for r in ok)]
    impls = list(dict.fromkeys((r["kind"], r["impl"]) for r in sorted(ok, key=_kind_rank)))
    colors = {impl: plt.get_cmap("tab10")(i % 10) for i, (_, impl) in enumerate(impls)}
    headed = [r for r in ok if r["num_heads"]]
    hidden = Counter(r["hidden"] for r in (headed or ok)).most_common(1)[0][0]
    batch = _pick([r["batch"] for r in ok], REFERENCE_POINT["batch"])
    steps = _pick([r["steps"] for r in ok], REFERENCE_POINT["steps"])
    head_splits = sorted({(r["num_heads"], r["head_dim"]) for r in headed if r["hidden"] == hidden}, key=lambda h: h[1])
    heads = (
        REFERENCE_POINT["heads"]
        if REFERENCE_POINT["heads"] in head_splits
        else (head_splits[len(head_splits) // 2] if head_splits else None)
    )

    from matplotlib.ticker import FuncFormatter

    # plain numbers on the log axes, at 1, 2 and 5 times powers of ten (matplotlib's default: 4x10^0)
    tick_label = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "125" else "")
    ncols = 2 * len(modes)
    fig, axes = plt.subplots(len(cells), ncols, figsize=(4.2 * ncols, 3.3 * len(cells)), squeeze=False)
    handles = {}
    for i, cell in enumerate(cells):
        for j, mode in enumerate(modes):
            ax_heads, ax_batch = axes[i][2 * j], axes[i][2 * j + 1]
            subset = [r for r in ok if r["cell"] == cell and r["mode"] == mode and r["steps"] == steps]
            for kind, impl in impls:
                style = {"color": colors[impl], "marker": "o", "ms": 4, "ls": "--" if kind == "cudnn" else "-"}
                mine = [r for r in subset if r["impl"] == impl]
                if kind == "cudnn":  # no heads: the same time for every head split of this hidden size
                    at = [r["ms"] for r in mine if r["hidden"] == hidden and r["batch"] == batch]
                    pts = [(D, at[0]) for _, D in head_splits] if at else []
                else:
                    pts = sorted(
                        (r["head_dim"], r["ms"]) for r in mine if r["hidden"] == hidden and r["batch"] == batch
                    )
                if pts:
                    (line,) = ax_heads.plot(*zip(*pts), label=impl, **style)
                    handles[impl] = line
                if heads is not None:
                    if kind == "cudnn":
                        pts = sorted((r["batch"], r["ms"]) for r in mine if r["hidden"] == heads[0] * heads[1])
                    else:
                        pts = sorted((r["batch"], r["ms"]) for r in mine if (r["num_heads"], r["head_dim"]) == heads)
                    if pts:
                        (line,) = ax_batch.plot(*zip(*pts), label=impl, **style)
                        handles[impl] = line
            title = f"{CELL_TITLES.get(cell, cell)} {mode}"
            ax_heads.set(
                title=f"{title}: hidden {hidden}, B={batch}, T={steps}",
                xlabel="head size D (NH = hidden / D)",
                ylabel="ms per call",
            )
            if head_splits:
                ax_heads.set_xscale("log", base=2)
                ax_heads.set_xticks([D for _, D in head_splits], [f"{NH}×{D}" for NH, D in head_splits], fontsize=7)
            ax_batch.set(
                title=f"{title}: {heads[0]}×{heads[1]}, T={steps}" if heads else title,
                xlabel="batch size B",
                ylabel="ms per call",
            )
            batches = sorted({r["batch"] for r in subset})
            if batches:
                ax_batch.set_xscale("log", base=2)
                ax_batch.set_xticks(batches, [str(b) for b in batches], fontsize=7)
            for ax in (ax_heads, ax_batch):
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(tick_label)
                ax.yaxis.set_minor_formatter(tick_label)
                ax.grid(True, which="both", alpha=0.3)
                ax.title.set_fontsize(9)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        ncol=min(len(handles), 7),
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.3 * len(cells))))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
