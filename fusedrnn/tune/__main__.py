"""Command line: ``python -m fusedrnn.tune PROBLEM_FILE [--timeout S] [--all] [--stats]``.

Prints one JSON object ``{"status", "solution", "objective"}`` and exits 0; a
malformed or unbounded problem prints ``FILE:LINE:COL: error: ...`` to stderr
and exits 2, and so do a file that cannot be read or is not UTF-8, and bad options.
"""

from __future__ import annotations

import json
import sys

from ..cli.args import Parser, positive_float
from .model import Model, TuneError
from .parser import parse_objective
from .solver import Solver


def _source_line(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def main(argv: list[str] | None = None) -> int:
    ap = Parser(
        prog="python -m fusedrnn.tune",
        description="Solve an integer constraint problem (ConstrINT-compatible syntax) and print JSON.",
    )
    ap.add_argument("problem", help="problem file ('-' for stdin)")
    ap.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (status 'timeout', best solution so far)",
    )
    ap.add_argument("--all", action="store_true", help='also list every solution under "solutions"')
    ap.add_argument(
        "--objective", default=None, metavar="'maximize EXPR'", help="objective, overriding a '# objective:' line"
    )
    ap.add_argument("--stats", action="store_true", help='add search statistics under "stats"')
    ap.add_argument(
        "--strip-parens", action="store_true", help="ignore parentheses like ConstrINT does (exact ConstrINT reading)"
    )
    args = ap.parse_args(argv)

    path = args.problem
    try:
        if path == "-":
            text = sys.stdin.buffer.read().decode("utf-8")
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        print(f"{path}: error: cannot read the problem file: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        print(
            f"{path}:{line}: error: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            file=sys.stderr,
        )
        return 2

    try:
        model = Model.from_text(text, strip_parens=args.strip_parens)
        objective = model.objective
        if args.objective is not None:
            objective = parse_objective(model, args.objective)
        result = Solver(model, objective, args.all, args.timeout).run()
    except TuneError as exc:
        if exc.line is None or exc.column is None:
            print(f"{path}: error: {exc.message}", file=sys.stderr)
        else:
            where = f"line {exc.line}, column {exc.column}"
            print(f"{path}:{exc.line}:{exc.column}: error: {exc.message} ({where})", file=sys.stderr)
            src = _source_line(text, exc.line) if args.objective is None else ""
            if src:
                print("    " + src.replace("\t", " "), file=sys.stderr)
                print("    " + " " * (exc.column - 1) + "^", file=sys.stderr)
        return 2

    print(json.dumps(result.to_dict(include_all=args.all, include_stats=args.stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
