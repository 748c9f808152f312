"""fusedrnn.tune: parser, semantics, builder API, timeouts and the command line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusedrnn.tune import Model, ModelError, ParseError, parse, solve
from fusedrnn.tune.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def sols(text: str, **kw) -> set[tuple[int, ...]]:
    model = parse(text)
    names = [v.name for v in model.variables]
    return {tuple(s[n] for n in names) for s in solve(text, all_solutions=True, **kw).solutions}


# --- semantics -------------------------------------------------------------


def test_variables_are_positive():
    assert sols("m <= 4;") == {(1,), (2,), (3,), (4,)}
    assert solve("x <= 3; x <= 0;").status == "infeasible"
    # intermediate values may be zero or negative
    assert sols("a <= 3; b <= 3; a - b == -2;") == {(1, 3)}


def test_equality_bounds_a_variable():
    assert sols("x == y; y <= 2;") == {(1, 1), (2, 2)}
    assert sols("a * b <= 4;") == {(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1)}
    # a disjunction bounds a variable when every alternative does
    assert sols("x <= 2 | x == 5;") == {(1,), (2,), (5,)}
    # a divisor of a bounded positive value is bounded
    assert sols("n == 12; n % d == 0;") == {(12, d) for d in (1, 2, 3, 4, 6, 12)}


def test_unbounded_variables_are_errors_that_name_them():
    with pytest.raises(ModelError) as info:
        solve("a <= 5;\nb >= a;")
    assert "'b'" in str(info.value) and info.value.line == 2 and info.value.column == 1
    with pytest.raises(ModelError, match="'x'"):
        solve("x % 4 == 0;")
    with pytest.raises(ModelError, match="'z'"):
        solve("y <= 3;\n# objective: maximize z")
    # x <= 5 | y <= 5 bounds neither
    with pytest.raises(ModelError):
        solve("x <= 5 | y <= 5;")


def test_operators_and_precedence():
    # % is the loosest arithmetic operator (ConstrINT): a + b % c * d == 0 is (a+b) % (c*d) == 0
    assert sols("a + b % c * d == 0; a <= 3; b <= 3; c <= 2; d <= 2;") == {
        (a, b, c, d) for a in range(1, 4) for b in range(1, 4) for c in (1, 2) for d in (1, 2) if (a + b) % (c * d) == 0
    }
    assert sols("x <= 9; x // 4 == 2;") == {(8,), (9,)}
    assert sols("x <= 9; (x + 1) % 4 == 2;") == {(1,), (5,), (9,)}
    assert sols("x <= 9; x % 4 != 0; x > 6; x >= 7;") == {(7,), (9,)}
    assert sols("x <= 5; -x ^ 2 >= -4;") == {(1,), (2,)}
    assert sols("x <= 5; x ** 2 < 10; 2 * (x + 1) != 4;") == {(2,), (3,)}
    assert sols("1 <= x <= 3 < y <= 4;") == {(1, 4), (2, 4), (3, 4)}
    assert sols("x == [8, 16, 32] | x == 3;") == {(3,), (8,), (16,), (32,)}
    assert sols("x * y == [6, 7]; x <= y;") == {(1, 6), (2, 3), (1, 7)}


def test_division_by_zero_makes_a_relation_false():
    assert sols("x <= 3; y <= 3; 6 // (x - y) == 3 | x == 1;") == {(1, 1), (1, 2), (1, 3), (3, 1)}


def test_objective_line_and_override():
    text = "a <= 10; b <= 10; a + b <= 12; a * b % 7 == 0;\n# objective: maximize a * b\n"
    r = solve(text)
    assert r.status == "optimal" and r.objective == 35 and r.solution["a"] * r.solution["b"] == 35
    r = solve(text, objective="minimize a + b")
    assert r.objective == 8
    r = solve(text, objective="maximize a - b")
    assert r.solution == {"a": 7, "b": 1} and r.objective == 6
    assert solve("x <= 3;\n#  Objective :  MINIMIZE 5 - x ;\n").objective == 2


def test_feasible_infeasible_and_all_solutions():
    r = solve("a * b == 12; a < b;")
    assert r.status == "feasible" and r.objective is None and r.solution["a"] * r.solution["b"] == 12
    r = solve("a * b == 12; a < b;", all_solutions=True)
    assert [(s["a"], s["b"]) for s in r.solutions] == [(1, 12), (2, 6), (3, 4)]
    r = solve("a * b == 13; a < b; a > 1;")
    assert r.status == "infeasible" and r.solution is None and r.objective is None
    r = solve("a * b == 12; a < b;\n# objective: minimize b - a", all_solutions=True)
    assert r.status == "optimal" and [(s["a"], s["b"]) for s in r.solutions] == [(3, 4), (2, 6), (1, 12)]


def test_large_domains_stay_intervals():
    # registers up to 65536 and shared memory in bytes: no value-by-value enumeration
    text = (
        "R <= 65536; S <= 232448; w == [8, 16, 32]; n <= 32; d == 1024;\n"
        "R == n * w * d // 4 + 1024 * n; S + 2 * R == 4 * n * w * d;\n"
        "# objective: maximize S - R\n"
    )
    t0 = time.perf_counter()
    r = solve(text)
    assert time.perf_counter() - t0 < 1.0
    s = r.solution
    assert r.status == "optimal" and parse(text).check(s) == []
    best = max(
        4 * n * w * 1024 - 3 * (n * w * 1024 // 4 + 1024 * n)
        for w in (8, 16, 32)
        for n in range(1, 33)
        if n * w * 1024 // 4 + 1024 * n <= 65536
        and 1 <= 4 * n * w * 1024 - 2 * (n * w * 1024 // 4 + 1024 * n) <= 232448
    )
    assert r.objective == best


def test_divisor_reasoning_on_big_numbers():
    r = solve("N == 1073741824; N % (a * b) == 0; a * b >= 1000000; a <= b;", all_solutions=True)
    assert r.status == "feasible"
    assert all(1073741824 % (s["a"] * s["b"]) == 0 for s in r.solutions)
    assert len(r.solutions) == sum(
        1 for i in range(31) for j in range(i, 31 - i) if 2 ** (i + j) >= 1000000 and i + j <= 30
    )


# --- parse errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "text,line,column,fragment",
    [
        ("a <= 5\nb <= 3;", 2, 1, "';'"),
        ("a <= 5;\nb + <= 3;", 2, 5, "expression"),
        ("a <= 5;\n  b = 3;", 2, 5, "=="),
        ("x <= 8;\nx / 2 <= 3;", 2, 3, "//"),
        ("x <= (3 + 4;", 1, 12, "')'"),
        ("x == [1, 2;", 1, 11, "']'"),
        ("x == [];", 1, 7, "integer"),
        ("x ^ y <= 3;", 1, 5, "exponent"),
        ("x <= 3;\nx + 1;", 2, 1, "comparison"),
        ("x <= 3 $ 4;", 1, 8, "character"),
        ("x % 2 % 3 == 0; x <= 3;", 1, 7, "%"),
        ("(x <= 3) + 1 <= 4;", 1, 1, "comparison"),
        ("x <= 3;\n# objective: maximize x +\n", 2, 26, "expression"),
        ("x <= 3;\n# objective: maximize [1, 2]\n", 2, 23, "list"),
        ("x <= 3;\n# objective: maximize x\n# objective: minimize x\n", 3, 1, "objective"),
        ("x <= 3 | y;", 1, 10, "comparison"),
        ("2x <= 3;", 1, 1, "number"),
    ],
)
def test_parse_errors_report_line_and_column(text, line, column, fragment):
    with pytest.raises(ParseError) as info:
        parse(text)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert fragment in err.message
    assert str(err).startswith(f"line {line}, column {column}: ")


def test_ordinary_comments_mentioning_objective_are_ignored():
    assert solve("x <= 2; # objective: we want it small\n").status == "feasible"


# --- builder API -----------------------------------------------------------


def test_builder_api():
    m = Model()
    wb = m.var("wb", values=[8, 16, 32])
    nw = m.var("nw", 1, 32)
    d = 768
    m.add(d % (wb * nw) == 0, nw * 32 <= 512, (wb == 32) | (nw <= 4))
    m.add("wb * nw >= 64;")  # text and objects mix, names resolve to the same variables
    m.maximize(wb * nw)
    r = m.solve()
    assert r.status == "optimal" and r.objective == 384 and r.solution == {"wb": 32, "nw": 12}
    with pytest.raises(TypeError):
        bool(wb == 8)
    with pytest.raises(ValueError):
        m.var("wb")
    other = Model().var("q", 1, 3)
    with pytest.raises(ValueError):
        m.add(other <= 2)
    # signed domains are allowed in the builder
    m2 = Model()
    x = m2.var("x", -3, 3)
    m2.add(x * x == 4, x.isin([-2, 5]))
    assert solve(m2, all_solutions=True).solutions == [{"x": -2}]


def test_objective_override_does_not_touch_the_model():
    m = Model()
    a = m.var("a", 1, 5)
    m.add(a != 3)
    r = solve(m, objective=("maximize", 10 - a))
    assert r.solution == {"a": 1} and m.objective is None
    assert solve(m, objective="minimize 10 - a").solution == {"a": 5}


def test_determinism():
    text = "a * b * c == 360; a <= b; b <= c; c <= 30;"
    first = solve(text)
    assert all(solve(text).solution == first.solution for _ in range(3))


# --- timeouts --------------------------------------------------------------


def _pigeonhole(n_vars: int, n_values: int) -> str:
    names = [f"a{i}" for i in range(n_vars)]
    lines = [f"{a} <= {n_values};" for a in names]
    lines += [f"{names[i]} != {names[j]};" for i in range(n_vars) for j in range(i + 1, n_vars)]
    return "\n".join(lines) + "\n"


def test_timeout_without_solution():
    t0 = time.perf_counter()
    r = solve(_pigeonhole(13, 12), timeout=0.3)
    assert time.perf_counter() - t0 < 2.0
    assert r.status == "timeout" and r.solution is None and r.objective is None


def test_timeout_keeps_best_solution_so_far():
    weighted = " + ".join(f"{i + 1} * a{i} * a{i}" for i in range(11))
    text = _pigeonhole(11, 11) + "# objective: maximize " + weighted
    r = solve(text, timeout=0.3)
    assert r.status == "timeout"
    assert r.solution is not None and parse(text).check(r.solution) == []
    assert r.objective == sum((i + 1) * r.solution[f"a{i}"] ** 2 for i in range(11))


# --- command line ----------------------------------------------------------


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_contract(tmp_path, capsys):
    p = tmp_path / "p.txt"
    p.write_text("a * b <= 100;\nb == [4, 8];\n# objective: maximize a + b\n")
    code, out, _ = run_cli(capsys, p)
    assert code == 0
    assert json.loads(out) == {"status": "optimal", "solution": {"a": 25, "b": 4}, "objective": 29}
    p.write_text("a * b == 12; a < b;\n")
    code, out, _ = run_cli(capsys, p)
    got = json.loads(out)
    assert code == 0 and set(got) == {"status", "solution", "objective"}
    assert got["status"] == "feasible" and got["objective"] is None
    assert got["solution"]["a"] * got["solution"]["b"] == 12
    p.write_text("a * b == 13; a < b; a > 1;\n")
    code, out, _ = run_cli(capsys, p)
    assert code == 0 and json.loads(out) == {"status": "infeasible", "solution": None, "objective": None}
    p.write_text(_pigeonhole(13, 12))
    code, out, _ = run_cli(capsys, p, "--timeout", "0.2")
    assert code == 0 and json.loads(out) == {"status": "timeout", "solution": None, "objective": None}
    p.write_text("a * b == 12; a < b;\n")
    code, out, _ = run_cli(capsys, p, "--all", "--stats")
    got = json.loads(out)
    assert got["solutions"] == [{"a": 1, "b": 12}, {"a": 2, "b": 6}, {"a": 3, "b": 4}]
    assert "nodes" in got["stats"]


def test_cli_errors(tmp_path, capsys):
    p = tmp_path / "bad.txt"
    p.write_text("a <= 5;\nb + <= 3;\n")
    code, out, err = run_cli(capsys, p)
    assert code == 2 and out == ""
    assert f"{p}:2:5:" in err and "line 2, column 5" in err
    p.write_text("a <= 5;\nb >= a;\n")
    code, out, err = run_cli(capsys, p)
    assert code == 2 and "'b'" in err and "line 2, column 1" in err
    code, out, err = run_cli(capsys, tmp_path / "missing.txt")
    assert code == 2 and "missing.txt" in err


def test_cli_subprocess(tmp_path):
    """The real entry point, as CI and users call it."""
    good = tmp_path / "good.txt"
    good.write_text(
        "# ConstrINT syntax\nHD == 96; HD % (T * W) == 0;\nT == [8, 16, 32];\nW <= 8;\n# objective: maximize T * W\n"
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("x <= 3;\nx <= (2;\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "fusedrnn.tune", str(good)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["status"] == "optimal" and got["objective"] == 96 and 96 % got["objective"] == 0
    r = subprocess.run(
        [sys.executable, "-m", "fusedrnn.tune", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2 and "line 2, column 8" in r.stderr


def test_tune_does_not_import_torch():
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('fusedrnn'); pkg.__path__ = [sys.argv[1]]; sys.modules['fusedrnn'] = pkg\n"
        "import fusedrnn.tune, fusedrnn.tune.__main__\n"
        "assert fusedrnn.tune.solve('x <= 2;').status == 'feasible'\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "fusedrnn")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_list_literal_object_reused_in_builder_is_one_choice_per_occurrence():
    from fusedrnn.tune.model import ListLiteral

    m = Model()
    x, y = m.var("x", 1, 9), m.var("y", 1, 9)
    sizes = ListLiteral([2, 3])
    m.add(x == sizes, y == sizes, (x + sizes == 5) | (x == 9))
    assert {(s["x"], s["y"]) for s in solve(m, all_solutions=True).solutions} == {(2, 2), (2, 3), (3, 2), (3, 3)}


def test_benchmark_problems_solve_and_verify():
    spec = importlib.util.spec_from_file_location("bench_tune", ROOT / "benchmarks" / "bench_tune.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    probs = bench.problems()
    assert len(probs) >= 100
    for name, text in probs[::20]:
        r = solve(text, timeout=10)
        assert r.status in ("optimal", "feasible", "infeasible"), name
        if r.solution is not None:
            assert parse(text).check(r.solution) == [], name
