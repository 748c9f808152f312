"""Integer constraint solver for choosing kernel tilings (pure Python, no torch).

Problems are integer variables with finite domains, arithmetic constraints
(``+ - * // % ^``, comparisons, divisibility, membership, disjunctions) and an
optional objective.  The solver propagates bounds and divisors and searches
completely: it returns a solution when one exists, proves infeasibility
otherwise, enumerates all solutions, and finds exact optima.

    >>> from fusedrnn.tune import solve
    >>> r = solve("x == [8, 16, 32]; w <= 32; x * w <= 256; 256 % (x * w) == 0;\\n"
    ...           "# objective: maximize x * w + x")
    >>> r.status, r.solution, r.objective
    ('optimal', {'x': 32, 'w': 8}, 288)

See docs/solver.md for the text syntax and semantics.
"""

from .model import (
    Conjunction,
    Constraint,
    Disjunction,
    Expr,
    Model,
    ModelError,
    Objective,
    ParseError,
    Relation,
    TuneError,
    Var,
)
from .solver import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, Result, Stats, solve


def parse(text: str, *, strip_parens: bool = False) -> Model:
    """Parse a problem in the text syntax into a Model."""
    return Model.from_text(text, strip_parens=strip_parens)


__all__ = [
    "Conjunction",
    "Constraint",
    "Disjunction",
    "Expr",
    "FEASIBLE",
    "INFEASIBLE",
    "Model",
    "ModelError",
    "OPTIMAL",
    "Objective",
    "ParseError",
    "Relation",
    "Result",
    "Stats",
    "TIMEOUT",
    "TuneError",
    "Var",
    "parse",
    "solve",
]
