"""The command line: ``python -m fusedrnn {demo,bench,info}`` on the CPU (smoke tests), and on a GPU (marked gpu).

The commands run in this process where they can (torch is imported once), as subprocesses where the
entry point itself is under test.
"""

import argparse
import importlib.util
import io
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch

from fusedrnn import cli
from fusedrnn.cli import bench, demo, info, report
from fusedrnn.cli.progress import Progress
from fusedrnn.tune import __main__ as tune_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# One tiny CPU sweep: the PyTorch loop only (on the CPU without a time cap); ten timed calls per row.
TINY = ["--heads", "2x4", "--batch", "2", "--steps", "8", "--reps", "10", "--max-reps", "10"]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _log_rows(path: pathlib.Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["record"] == "row"]


def test_usage_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "fusedrnn"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0
    for command in ("demo", "bench", "info"):
        assert re.search(rf"^\s+{command}\s", result.stdout, flags=re.M), result.stdout


def test_unknown_command_is_a_usage_error_on_stderr():
    result = subprocess.run(
        [sys.executable, "-m", "fusedrnn", "nope"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "python -m fusedrnn: error: unknown command 'nope'; expected one of demo, bench, info "
        "(see python -m fusedrnn --help)"
    ]


def _one_line_error(capsys, run) -> str:
    """``run()`` must exit with code 2 (a usage error), printing one line to stderr and nothing to stdout."""
    with pytest.raises(SystemExit) as exit_info:
        run()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured
    return captured.err


@pytest.mark.parametrize(
    "command,argv,expected",
    [
        ("demo", ["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        ("demo", ["--steps", "-5"], "argument --steps: expected an integer >= 1, got -5"),
        ("demo", ["--steps", "many"], "argument --steps: expected an integer >= 1, got 'many'"),
        ("demo", ["--train-length", "0"], "argument --train-length: expected an integer >= 1, got 0"),
        ("demo", ["--eval-length", "0"], "argument --eval-length: expected an integer >= 1, got 0"),
        ("demo", ["--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
        ("demo", ["--heads", "0"], "argument --heads: expected an integer >= 1, got 0"),
        ("demo", ["--head-dim", "0"], "argument --head-dim: expected an integer >= 1, got 0"),
        ("demo", ["--lr", "0"], "argument --lr: expected a number > 0, got 0"),
        ("demo", ["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
        ("demo", ["--clip", "-1"], "argument --clip: expected a number >= 0, got -1"),
        ("demo", ["--modulus", "1"], "argument --modulus: expected an integer >= 2, got 1"),
        ("demo", ["--device", "tpu"], "argument --device: expected cpu, cuda or cuda:N, got 'tpu'"),
        ("demo", ["--device", "mps"], "argument --device: expected cpu, cuda or cuda:N, got 'mps'"),
        ("demo", ["--cell", "transformer"], "argument --cell: invalid choice: 'transformer'"),
        ("bench", ["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        ("bench", ["--batch", "4", "0"], "argument --batch: expected an integer >= 1, got 0"),
        ("bench", ["--reps", "0"], "argument --reps: expected an integer >= 1, got 0"),
        ("bench", ["--reps", "20", "--max-reps", "10"], "--max-reps (10) must be >= --reps (20)"),
        ("bench", ["--target-ms", "0"], "argument --target-ms: expected a number > 0, got 0"),
        ("bench", ["--time-budget", "-1"], "argument --time-budget: expected a number >= 0, got -1"),
        ("bench", ["--compile-workers", "-1"], "argument --compile-workers: expected an integer >= 0, got -1"),
        ("bench", ["--heads", "12x0"], "--heads: NH and D must be >= 1, got '12x0'"),
        ("bench", ["--heads", "twelve"], "--heads: expected NHxD like 12x64, got 'twelve'"),
        ("bench", ["--plot-from", "no-such-file.jsonl"], "--plot-from: no such file no-such-file.jsonl"),
        ("info", ["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        ("info", ["--heads", "-1"], "argument --heads: expected an integer >= 1, got -1"),
        ("info", ["--jobs", "0"], "argument --jobs: expected an integer >= 1, got 0"),
        ("info", ["--device", "cuda:x"], "argument --device: expected cpu, cuda or cuda:N, got 'cuda:x'"),
        ("info", ["--arch", "sm_90a"], "--arch goes with --compile-all"),
    ],
)
def test_bad_values_are_one_line_usage_errors(capsys, command, argv, expected):
    module = {"demo": demo, "bench": bench, "info": info}[command]
    err = _one_line_error(capsys, lambda: module.main(argv))
    assert err.startswith(f"python -m fusedrnn {command}: error: {expected}"), err
    assert err.rstrip().endswith(f"(see python -m fusedrnn {command} --help)"), err


@pytest.mark.parametrize("command", ["demo", "info"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_gpu_asked_for_where_none_is_is_a_usage_error(capsys, monkeypatch, command, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, as one without a GPU
    module = {"demo": demo, "info": info}[command]
    err = _one_line_error(capsys, lambda: module.main(["--device", device]))
    assert f"argument --device: {device!r} asked for, but no CUDA device is available (use cpu)" in err


def test_a_device_index_beyond_the_machine_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    err = _one_line_error(capsys, lambda: demo.main(["--device", "cuda:2"]))
    assert "argument --device: 'cuda:2' asked for, but this machine has 2 CUDA device(s)" in err


def test_demo_unknown_backend_is_an_error_on_stderr(capsys):
    assert demo.main(["--backend", "nope", "--plot", ""]) == 2
    captured = capsys.readouterr()
    assert "python -m fusedrnn demo: error: backend: unknown backend 'nope'" in captured.err
    assert "training" not in captured.out  # refused before training


def test_bench_unknown_backend_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the backends are checked on a GPU only
    err = _one_line_error(capsys, lambda: bench.main(["--backends", "nope", "--dry-run"]))
    assert "--backends: unknown or non-GPU backend(s) ['nope']" in err


@pytest.mark.parametrize("content", [b"\xff\xfe not json", b"[1, 2, 3]\n"])
def test_bench_plot_from_a_file_not_ours(tmp_path, capsys, content):
    """Not UTF-8: a one-line usage error; UTF-8 JSON that holds no rows of ours: empty tables, no traceback."""
    source = tmp_path / "bench.jsonl"
    source.write_bytes(content)
    if content.startswith(b"\xff"):
        err = _one_line_error(capsys, lambda: bench.main(["--plot-from", str(source), "--out", str(tmp_path)]))
        assert f"--plot-from {source}: UnicodeDecodeError" in err
    else:
        assert bench.main(["--plot-from", str(source), "--out", str(tmp_path), "--quiet"]) == 0
        assert json.loads((tmp_path / "bench.json").read_text())["rows"] == []


def test_demo_one_step_reports_no_speed_it_did_not_measure(capsys):
    """One step is all compilation (excluded from the speed): no speed line, and never a negative one."""
    assert demo.main(["--steps", "1", "--eval-length", "8", "--train-length", "8", "--plot", ""]) == 0
    out = capsys.readouterr().out
    assert "trained 1 steps" in out and "steps/s" not in out
    assert "beyond the training length" not in out  # the test is no longer than the training sequences


def test_console_command_is_declared_and_runs(monkeypatch, capsys):
    """pyproject.toml installs ``fusedrnn`` as a console command calling fusedrnn.cli:main with sys.argv."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"fusedrnn": "fusedrnn.cli:main"}
    monkeypatch.setattr(sys, "argv", ["/usr/bin/fusedrnn", "nope"])
    assert cli.main() == 2
    assert capsys.readouterr().err.startswith("fusedrnn: error: unknown command 'nope'")  # named as it was called
    monkeypatch.setattr(sys, "argv", ["/usr/bin/fusedrnn"])
    assert cli.main() == 0
    assert capsys.readouterr().out.startswith("usage: fusedrnn {demo,bench,info} [options]")


@pytest.mark.skipif(shutil.which("fusedrnn") is None, reason="the package is not installed (pip install -e .)")
def test_installed_console_command():
    result = subprocess.run(["fusedrnn", "info", "--steps", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("fusedrnn info: error: argument --steps: expected an integer >= 1, got 0")


@pytest.mark.parametrize("case", ["not-utf8", "directory", "missing", "stdin-not-utf8"])
def test_tune_unreadable_problem_files_are_one_line_errors(tmp_path, capsys, monkeypatch, case):
    path = tmp_path / "problem.txt"
    if case == "not-utf8":
        path.write_bytes(b"x <= 3;\ny == \xe9;\n")  # Latin-1 text
    elif case == "directory":
        path = tmp_path
    elif case == "stdin-not-utf8":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x <= 3;\ny == \xe9;\n")))
        path = "-"
    assert tune_cli.main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured
    expected = {
        "not-utf8": f"{path}:2: error: not UTF-8 text (byte 0xe9 at offset 13)",
        "stdin-not-utf8": "-:2: error: not UTF-8 text (byte 0xe9 at offset 13)",
        "directory": f"{path}: error: cannot read the problem file: Is a directory",
        "missing": f"{path}: error: cannot read the problem file: No such file or directory",
    }[case]
    assert captured.err.strip() == expected


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--timeout", "0", "p"], "argument --timeout: expected a number > 0, got 0"),
        ([], "the following arguments are required: problem"),
        (["p", "--solver", "x"], "unrecognized arguments: --solver x"),
    ],
)
def test_tune_bad_options_are_one_line_usage_errors(capsys, argv, expected):
    err = _one_line_error(capsys, lambda: tune_cli.main(argv))
    assert err.startswith(f"python -m fusedrnn.tune: error: {expected}"), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback of bench")
def test_bench_on_cpu_writes_every_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench.main(["--cells", "lstm", "slstm", *TINY, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no CUDA device" in text and "PyTorch loop" in text  # says it runs the reference only
    expected = {"bench.jsonl", "bench.json", "bench.csv", "bench.md"} | ({"bench.png"} if _has_matplotlib() else set())
    assert expected <= {p.name for p in out.iterdir()}

    data = json.loads((out / "bench.json").read_text())
    assert data["schema"] == bench.SCHEMA and len(data["runs"]) == 1
    assert data["runs"][0]["units_left"] == 0 and data["runs"][0]["device"] == "cpu"
    rows = data["rows"]
    assert {(r["cell"], r["mode"]) for r in rows} == {(c, m) for c in ("lstm", "slstm") for m in ("fw", "fwbw")}
    for row in rows:
        assert set(report.FIELDS) <= set(row)
        assert row["impl"] == "torch-loop" and row["kind"] == "torch-loop"
        assert (row["num_heads"], row["head_dim"], row["hidden"], row["batch"], row["steps"]) == (2, 4, 8, 2, 8)
        assert row["status"] == "ok" and row["ms"] > 0 and row["first_ms"] > 0
        assert row["reps"] == 10 and row["warmup"] >= 2 and row["dtype"] == "float32"
    csv_lines = (out / "bench.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:3] == ["impl", "kind", "cell"] and len(csv_lines) == 1 + len(rows)
    md = (out / "bench.md").read_text()
    assert "### LSTM, forward (float32), ms per call" in md and "### sLSTM, forward + backward" in md
    assert "Command: `python -m fusedrnn bench --cells lstm slstm" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback of bench")
def test_bench_resume_skips_rows_already_measured(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    assert bench.main(["--cells", "elman", *TINY, "--modes", "fw", "--out", str(tmp_path), "--resume", str(log)]) == 0
    assert len(_log_rows(log)) == 1
    # the same sweep plus a cell: only the new cell's rows are measured, appended to the same log
    assert (
        bench.main(["--cells", "elman", "gru", *TINY, "--modes", "fw", "--out", str(tmp_path), "--resume", str(log)])
        == 0
    )
    rows = _log_rows(log)
    assert [(r["cell"], r["mode"]) for r in rows] == [("elman", "fw"), ("gru", "fw")]
    assert "resuming" in capsys.readouterr().out
    # nothing left: nothing measured; the outputs cover both parts of the logical run
    assert (
        bench.main(["--cells", "elman", "gru", *TINY, "--modes", "fw", "--out", str(tmp_path), "--resume", str(log)])
        == 0
    )
    assert len(_log_rows(log)) == 2
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["runs"]) == 3 and len(data["rows"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback of bench")
def test_bench_time_budget_stops_cleanly(tmp_path, capsys):
    assert bench.main(["--cells", "lstm", *TINY, "--out", str(tmp_path), "--time-budget", "0"]) == 0
    assert "time budget of 0 s spent: 2 rows not measured" in capsys.readouterr().out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["rows"] == [] and data["runs"][0]["units_left"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback of bench")
def test_bench_loop_cap_records_skips(tmp_path):
    assert bench.main(["--cells", "lstm", *TINY, "--modes", "fw", "--out", str(tmp_path), "--loop-max-ms", "0"]) == 0
    (row,) = _log_rows(tmp_path / "bench.jsonl")
    assert row["status"] == "skipped" and "too slow" in row["reason"] and row["estimate_ms"] > 0 and row["ms"] is None


def test_bench_gpu_implementations_on_cpu_tensors():
    """The GPU implementations' code paths (the Triton backend in its interpreter, torch.nn's LSTM as cuDNN
    runs it, flashrnn), run here on CPU tensors: rows, skips and failures as a GPU run records them."""
    args = argparse.Namespace(loop_max_ms=1e6, reps=2, max_reps=2, target_ms=1.0)
    cpu = torch.device("cpu")
    shape = bench.Shape("lstm", 1, 16, 2, 4)
    impls = [
        bench.Impl("triton", "fusedrnn", torch.float32),
        bench.Impl("cudnn-fp32", "cudnn", torch.float32),
        bench.Impl("torch-loop", "torch-loop", torch.float32),
    ]
    if importlib.util.find_spec("flashrnn"):
        impls += [
            bench.Impl("flashrnn-vanilla", "flashrnn", torch.float32),
            bench.Impl("flashrnn-cuda_fused", "flashrnn", torch.float32),
        ]  # needs CUDA: fails, is skipped
    rows = {(r["impl"], r["mode"]): r for impl in impls for r in bench.run_impl(impl, shape, ["fw", "fwbw"], cpu, args)}
    for impl in impls[:4]:
        for mode in ("fw", "fwbw"):
            row = rows[(impl.name, mode)]
            assert row["status"] == "ok" and row["ms"] > 0 and row["reps"] == 2, row
            assert row["num_heads"] == (None if impl.kind == "cudnn" else 1) and row["hidden"] == 16
    if len(impls) == 5:
        assert rows[("flashrnn-cuda_fused", "fw")]["status"] == "skipped"
    # a head size the Triton backend refuses: skipped with the registry's reason, nothing allocated
    (row,) = bench.run_impl(impls[0], bench.Shape("lstm", 1, 256, 2, 4), ["fw"], cpu, args)
    assert row["status"] == "skipped" and "head_dim 256 > 128" in row["reason"]


def test_bench_dry_run_counts_rows(capsys):
    assert bench.main(["--cells", "lstm", "gru", *TINY, "--dry-run"]) == 0
    assert "4 rows to measure" in capsys.readouterr().out


@pytest.mark.parametrize("steps,expected", [([1024, 256, 4096], [256]), ([1, 7, 32, 64, 9], [1, 7, 32])])
def test_compile_ahead_uses_one_length_per_triton_specialisation(steps, expected):
    assert bench._representative_steps(steps) == expected


def test_compile_ahead_starts_workers_that_accept_their_command_line(capsys):
    """--compile-workers: the worker processes parse their arguments and exit 0 (here, without a GPU, with
    nothing to compile); a worker that failed would be reported."""
    units = [
        (bench.Shape(cell, NH, D, 2, 8), bench.Impl("triton", "fusedrnn", torch.float32), ["fw", "fwbw"])
        for cell, NH, D in (("lstm", 2, 4), ("gru", 1, 8), ("slstm", 3, 16))
    ]
    units.append((bench.Shape("lstm", 2, 4, 2, 8), bench.Impl("cudnn-bf16", "cudnn", torch.bfloat16), ["fw"]))
    args = argparse.Namespace(compile_workers=2, dtype="float32", modes=["fw", "fwbw"])
    fake_gpu = argparse.Namespace(type="cuda")  # compile_ahead only asks for the device type
    assert bench.compile_ahead(units, args, fake_gpu) > 0
    out = capsys.readouterr().out
    assert "compiled ahead by 2 processes" in out and "failed" not in out


def _gpu_like_rows() -> list[dict]:
    """Rows as an H100 run writes them (invented numbers, only for the report code)."""
    rows = []

    def add(impl, kind, cell, heads, B, T, mode, ms=None, reason=None, dtype="bfloat16"):
        NH, D = heads if heads else (None, None)
        rows.append(
            {
                "record": "row",
                "impl": impl,
                "kind": kind,
                "cell": cell,
                "num_heads": NH,
                "head_dim": D,
                "hidden": 768,
                "batch": B,
                "steps": T,
                "dtype": dtype,
                "mode": mode,
                "status": "ok" if ms else "skipped",
                "reason": reason,
                "ms": ms,
                "first_ms": 2000.0 if ms else None,
                "reps": 10 if ms else None,
                "warmup": 2 if ms else None,
                "estimate_ms": None,
                "device": "cuda:0",
                "time": "2026-01-01T00:00:00+00:00",
            }
        )

    for cell in ("lstm", "slstm"):
        for mode, scale in (("fw", 1.0), ("fwbw", 3.0)):
            for B in (1, 16):
                for NH, D in ((12, 64), (1, 768)):
                    if D <= 128:
                        add("triton", "fusedrnn", cell, (NH, D), B, 1024, mode, ms=1.0 * scale)
                    else:
                        add("triton", "fusedrnn", cell, (NH, D), B, 1024, mode, reason="head_dim 768 > 128")
                    add("alternating", "fusedrnn", cell, (NH, D), B, 1024, mode, ms=6.0 * scale)
                    add("torch-loop", "torch-loop", cell, (NH, D), B, 1024, mode, reason="too slow")
                if cell == "lstm":
                    add("cudnn-bf16", "cudnn", cell, None, B, 1024, mode, ms=15.0 * scale)
                    add("cudnn-fp16", "cudnn", cell, None, B, 1024, mode, ms=2.5 * scale, dtype="float16")
    return rows


def test_plot_from_regenerates_tables_and_plot(tmp_path, capsys):
    source = tmp_path / "device" / "bench.jsonl"
    source.parent.mkdir()
    run = {
        "record": "run",
        "schema": 1,
        "started": "2026-01-01T00:00:00+00:00",
        "command": "python -m fusedrnn bench",
        "device": "NVIDIA H100 80GB HBM3",
        "commit": "abc1234",
        "versions": {"torch": "2.11.0"},
        "note": "x",
    }
    end = {"record": "end", "finished": "2026-01-01T00:08:00+00:00", "units_left": 0, "seconds": 480.0}
    source.write_text("\n".join(json.dumps(r) for r in [run, *_gpu_like_rows(), end]) + "\n")
    out = tmp_path / "docs"
    assert bench.main(["--plot-from", str(source), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "LSTM, forward (bfloat16), ms per call" in text
    md = (out / "bench.md").read_text()
    assert "Device: NVIDIA H100 80GB HBM3; commit abc1234" in md
    # LSTM tables: a column per implementation and the speed-up of the fastest fusedrnn backend over cuDNN
    header = next(line for line in md.splitlines() if line.startswith("| NH × D"))
    assert header == (
        "| NH × D | B | T | triton | alternating | cudnn-bf16 | cudnn-fp16 | torch-loop | "
        "fastest fusedrnn vs cudnn-bf16 | fastest fusedrnn vs cudnn-fp16 |"
    )
    assert "| 12 × 64 | 16 | 1024 | 1.00 | 6.00 | 15.0 | 2.50 | – | 15.0× | 2.5× |" in md
    assert "| 1 × 768 | 16 | 1024 | – | 6.00 | 15.0 | 2.50 | – | 2.5× | 0.4× |" in md
    assert "- triton skipped (2 rows): head_dim 768 > 128" in md
    # the summary at DESIGN.md's protocol point: every cell and head split, fw / fwbw per implementation
    assert "### Summary: B = 16, T = 1024, ms per call (fw / fwbw)" in md
    assert "| sLSTM | 12 × 64 | 1.00 / 3.00 | 6.00 / 18.0 |  |  | – / – |" in md
    # sLSTM has no cuDNN: no cuDNN and no speed-up columns
    slstm = md.split("### sLSTM, forward (bfloat16)")[1].split("###")[0]
    assert "cudnn" not in slstm
    assert len(json.loads((out / "bench.json").read_text())["rows"]) == len(_gpu_like_rows())
    assert (out / "bench.csv").is_file()
    assert (out / "bench.png").is_file() == _has_matplotlib()


def test_report_keeps_the_last_measurement_of_a_row(tmp_path):
    rows = _gpu_like_rows()[:1]
    again = dict(rows[0], ms=0.5)
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [rows[0], again]) + '\n{"record": "row", "impl')  # cut short
    runs, loaded = report.load(path)
    assert runs == [] and len(loaded) == 1 and loaded[0]["ms"] == 0.5


@pytest.mark.parametrize("ms,text", [(0.91234, "0.912"), (3.456, "3.46"), (12.34, "12.3"), (1234.5, "1234")])
def test_format_ms(ms, text):
    assert report.format_ms(ms) == text


def test_info_reports_backends_and_launch(capsys):
    assert info.main(["--cell", "gru", "--heads", "3", "--head-dim", "256", "--batch", "4", "--steps", "64"]) == 0
    text = capsys.readouterr().out
    assert "torch " in text and "triton" in text and "NVRTC" in text
    assert "call: gru, 3 heads x 256 (hidden 768), B 4, T 64" in text
    assert re.search(r"^\s+reference\s+can run it", text, flags=re.M)
    assert "head_dim 256 > 128" in text  # why the Triton backend cannot
    assert "auto picks: " in text and "kernel cache" in text


def test_info_without_triton():
    """A torch-only install: info still answers, and says why the Triton-based backends are missing."""
    code = "import sys; sys.modules['triton'] = None; from fusedrnn.cli import main; sys.exit(main(['info']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "triton not installed" in result.stdout
    assert re.search(r"^\s+triton\s+not loaded: ModuleNotFoundError", result.stdout, flags=re.M)
    assert "auto picks: reference" in result.stdout


def test_info_json(capsys):
    assert info.main(["--json", "--cell", "slstm", "--heads", "12", "--head-dim", "64", "--dtype", "float32"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["call"]["hidden"] == 768 and data["call"]["cell"] == "slstm"
    assert data["backends"]["backends"]["reference"]["available"] is True
    assert data["backends"]["auto"] in data["backends"]["backends"]
    launch = data["launch"]["triton"]
    assert launch["BLOCK_D"] == 64 and launch["grid"][0] == 12
    assert {"dir", "entries", "bytes"} <= set(data["triton_cache"])
    assert set(data["versions"]) >= {"torch", "triton", "nvrtc"}


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_info_formats_every_cuda_kernel_family(arch):
    """The cuda launch lines of ``info`` for one shipped variant of each kernel family (single CTA, cluster, K split
    over warps, cooperative grid), built as on a GPU: a shape field must not shadow the launch description."""
    from fusedrnn.backends import Call
    from fusedrnn.backends.cuda.kernels import shipped_variants
    from fusedrnn.cells import get_cell

    picked = {}
    for v in shipped_variants(arch)[0]:
        picked.setdefault((v.kind, v.family), v)
    assert len(picked) >= (3 if arch == "sm_80" else 6)  # every family of this arch, forward and backward
    for v in picked.values():
        call = Call(
            get_cell(v.cell),
            batch=20,
            steps=7,
            num_heads=2,
            head_dim=v.head_dim,
            dtype=torch.bfloat16,
            device=torch.device("cpu"),
            requires_grad=v.kind == "backward",
        )
        entry = info.variant_entry(v, call)
        data = info.collect(call)
        data["launch"]["cuda"] = {"arch": arch, v.kind: entry}
        text = info.format_report(data)
        line = next(line for line in text.splitlines() if line.startswith(f"cuda {v.kind} ({arch}): {v.name}"))
        tiles = -(-20 // v.shape.rows)
        ctas = v.shape.ctas_per_head
        assert f"grid 2 heads x {tiles} tiles of {v.shape.rows} rows x {ctas} CTAs per head" in line, line


def test_demo_smoke(tmp_path, capsys):
    plot = tmp_path / "curves.png"
    assert demo.main(["--preset", "cpu", "--steps", "3", "--eval-length", "32", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"accuracy on length-32 sequences \(trained on length 24\): \d\.\d{3}", out), out
    assert "tokens/s" in out
    assert plot.is_file() == _has_matplotlib()


def test_fallback_progress_bar_logs_lines():
    stream = io.StringIO()  # not a terminal: lines, not redraws
    bar = Progress(3, "work", file=stream)
    for _ in range(3):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("work: [") and lines[-1].startswith("work: [" + "#" * 24 + "] 3/3")


@pytest.mark.gpu
def test_bench_on_gpu_times_every_implementation(tmp_path):
    out = tmp_path / "out"
    args = [
        "--cells",
        "lstm",
        "slstm",
        "--heads",
        "4x16",
        "1x64",
        "--batch",
        "4",
        "--steps",
        "64",
        "--reps",
        "10",
        "--max-reps",
        "10",
        "--loop-max-ms",
        "1e6",
        "--compile-workers",
        "2",
        "--out",
        str(out),
    ]
    assert bench.main(args) == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["runs"][0]["compile_workers"] == 2 and data["runs"][0]["compile_seconds"] > 0
    rows = data["rows"]
    ok = {(r["impl"], r["cell"], r["mode"]) for r in rows if r["status"] == "ok"}
    for mode in ("fw", "fwbw"):
        for impl in ("triton", "alternating", "torch-loop"):
            assert {(impl, "lstm", mode), (impl, "slstm", mode)} <= ok, rows
        assert {("cudnn-bf16", "lstm", mode), ("cudnn-fp16", "lstm", mode)} <= ok
    cudnn = [r for r in rows if r["kind"] == "cudnn"]
    assert len(cudnn) == 4 and all(r["num_heads"] is None and r["hidden"] == 64 for r in cudnn)  # once per hidden
    assert not any(r["cell"] == "slstm" and r["kind"] == "cudnn" for r in rows)


@pytest.mark.gpu
def test_demo_gpu_defaults_learn():
    """The GPU preset, unchanged: it must learn (accuracy on 16x longer sequences) and finish quickly."""
    result = subprocess.run(
        [sys.executable, "-m", "fusedrnn", "demo", "--plot", ""],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=True,
    )
    accuracy = float(re.search(r"accuracy on length-\d+ sequences .*: (\d\.\d+)", result.stdout).group(1))
    assert "preset gpu" in result.stdout and accuracy >= 0.99, result.stdout


@pytest.mark.gpu
def test_info_on_gpu(capsys):
    assert info.main(["--cell", "lstm", "--heads", "12", "--head-dim", "64"]) == 0
    text = capsys.readouterr().out
    assert "compute capability" in text and " SMs" in text
    assert re.search(r"^\s+triton\s+can run it", text, flags=re.M) and re.search(r"auto picks: (cuda|triton)", text)
    assert "GEMM mode" in text and "CUDA graph" in text


def test_kernel_breakdown_script_runs_on_cpu(capsys):
    """benchmarks/kernel_breakdown.py (per-kernel time of bench's fwbw iteration; a GPU tool) on the CPU, tiny."""
    spec = importlib.util.spec_from_file_location("kernel_breakdown", ROOT / "benchmarks" / "kernel_breakdown.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (
        module.main(
            ["lstm:2x16", "--backend", "reference", "--device", "cpu", "--batch", "2", "--steps", "3", "--iters", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "== lstm:2x16 on reference (cpu)" in out
    total = float(re.search(r"^\s*([0-9.]+)\s+total$", out, re.M).group(1))
    assert total > 0


# --- bench --preset regimes ----------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="counts the CPU's implementations (the PyTorch loop only)")
@pytest.mark.parametrize(
    ("narrowing", "rows"),
    [
        # 4 cells x 4 heads x (4 B at T 256, 1024 + 2 B at T 16384, 65536) x 2 modes
        ([], 4 * 4 * (4 * 2 + 2 * 2) * 2),
        # T 1024: B 16 and 256; T 65536: B 16 only (B 256 is past the preset's long-sequence batch limit)
        (["--cells", "lstm", "--heads", "1x768", "--batch", "16", "256", "--steps", "1024", "65536"], 3 * 2),
        (["--cells", "gru", "--heads", "12x64", "--batch", "1", "--steps", "256", "--modes", "fw"], 1),
    ],
)
def test_bench_preset_regimes_rows(capsys, narrowing, rows):
    assert bench.main(["--preset", "regimes", *narrowing, "--dry-run"]) == 0
    assert f"{rows} rows to measure" in capsys.readouterr().out


def test_floors_latency_and_compute(monkeypatch):
    from fusedrnn.cli import floors

    cpu = torch.device("cpu")
    # one CTA per head of 64: 43 ns a step; forward + backward twice that
    fw = floors.floor("lstm", 12, 64, 16, 1024, "fw", torch.bfloat16, cpu)
    assert fw["floor_latency_ms"] == pytest.approx(1024 * 43e-6, abs=1e-5)  # rounded to 10 ns
    assert fw["floor_compute_ms"] is None and fw["floor_ms"] == fw["floor_latency_ms"]
    fwbw = floors.floor("lstm", 1, 2048, 16, 1024, "fwbw", torch.bfloat16, cpu)
    assert fwbw["floor_latency_ms"] == pytest.approx(2 * 1024 * 1100e-6, abs=1e-5)
    # B = 256, 1 x 768, T = 1024 at an H100's 989 TFLOP/s: 2 B T 4 D^2 FLOP, 1.25 ms; compute-bound
    monkeypatch.setattr(floors, "_peak_tflops", lambda device: 989.0)
    big = floors.floor("lstm", 1, 768, 256, 1024, "fw", torch.bfloat16, cpu)
    assert big["floor_compute_ms"] == pytest.approx(2 * 256 * 1024 * 4 * 768**2 / 989e12 * 1e3, rel=1e-4)
    assert big["floor_ms"] == big["floor_compute_ms"] > big["floor_latency_ms"]
    assert "cluster of 16" in big["floor_basis"] and "TFLOP/s" in big["floor_basis"]


def test_report_shows_floor_and_peak(tmp_path):
    row = {
        "record": "row", "impl": "cuda", "kind": "fusedrnn", "cell": "lstm", "num_heads": 1, "head_dim": 768,
        "hidden": 768, "batch": 16, "steps": 1024, "dtype": "bfloat16", "mode": "fwbw", "status": "ok",
        "reason": None, "ms": 3.5, "peak_mb": 2048.0, "floor_ms": 0.93,
    }  # fmt: skip
    log = tmp_path / "bench.jsonl"
    log.write_text(json.dumps(row) + "\n")
    text = report.text_tables(report.load(log)[1])
    assert "floor" in text and "0.930" in text and "3.50 (2 GB)" in text
