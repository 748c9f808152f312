"""Problem model: integer variables, expressions, constraints and an objective.

Expressions are built with Python operators (``+ - * // % **``, unary ``-``);
comparisons (``== != <= < >= >``) build constraints, and ``|`` / ``&`` combine
constraints.  ``x == [8, 16, 32]`` is membership.  Note that in Python code the
usual Python precedence applies (``a % b * c`` is ``(a % b) * c``), while the
text syntax follows ConstrINT (see ``docs/solver.md``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

Position = tuple[int, int] | None  # (line, column), 1-based


class TuneError(ValueError):
    """Base class of the errors in a problem, with an optional source position."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.column}: {self.message}"


class ParseError(TuneError):
    """The problem text is malformed."""


class ModelError(TuneError):
    """The problem is well formed but not solvable as posed (e.g. an unbounded variable)."""


def _bool_error(self) -> bool:
    raise TypeError(
        "a fusedrnn.tune expression or constraint has no truth value; pass constraints to "
        "Model.add() (Python's chained comparisons like 1 <= x <= 8 are not supported: add "
        "1 <= x and x <= 8 separately)"
    )


def as_expr(value: Expr | int | Sequence[int]) -> Expr:
    """Convert an int (or a list of ints, for membership) to an expression."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool):
        raise TypeError("booleans are not integer expressions")
    if isinstance(value, int):
        return Const(value)
    if isinstance(value, (list, tuple, range)):
        return ListLiteral(value)
    raise TypeError(f"cannot use {type(value).__name__} in an integer expression")


class Expr:
    """An integer expression."""

    __slots__ = ("pos",)

    def __init__(self, pos: Position = None):
        self.pos = pos

    # Arithmetic.
    def __add__(self, other):
        return BinOp("+", self, as_expr(other))

    def __radd__(self, other):
        return BinOp("+", as_expr(other), self)

    def __sub__(self, other):
        return BinOp("-", self, as_expr(other))

    def __rsub__(self, other):
        return BinOp("-", as_expr(other), self)

    def __mul__(self, other):
        return BinOp("*", self, as_expr(other))

    def __rmul__(self, other):
        return BinOp("*", as_expr(other), self)

    def __floordiv__(self, other):
        return BinOp("//", self, as_expr(other))

    def __rfloordiv__(self, other):
        return BinOp("//", as_expr(other), self)

    def __mod__(self, other):
        return BinOp("%", self, as_expr(other))

    def __rmod__(self, other):
        return BinOp("%", as_expr(other), self)

    def __pow__(self, exponent):
        if isinstance(exponent, bool) or not isinstance(exponent, int) or exponent < 0:
            raise TypeError("the exponent must be a non-negative int")
        return Pow(self, exponent)

    def __neg__(self):
        return Neg(self)

    def __pos__(self):
        return self

    # Comparisons build constraints.
    def __eq__(self, other):  # type: ignore[override]
        return Relation("==", self, as_expr(other))

    def __ne__(self, other):  # type: ignore[override]
        return Relation("!=", self, as_expr(other))

    def __le__(self, other):
        return Relation("<=", self, as_expr(other))

    def __lt__(self, other):
        return Relation("<", self, as_expr(other))

    def __ge__(self, other):
        return Relation(">=", self, as_expr(other))

    def __gt__(self, other):
        return Relation(">", self, as_expr(other))

    __hash__ = object.__hash__
    __bool__ = _bool_error

    def isin(self, values: Iterable[int]) -> Relation:
        """Membership constraint: the expression takes one of ``values``."""
        return Relation("==", self, ListLiteral(values))

    def children(self) -> tuple[Expr, ...]:
        return ()

    def walk(self) -> Iterator[Expr]:
        """This node and all nodes below it, depth first, left to right."""
        yield self
        for child in self.children():
            yield from child.walk()

    def __repr__(self) -> str:
        return f"<Expr {self}>"


class Const(Expr):
    __slots__ = ("value",)

    def __init__(self, value: int, pos: Position = None):
        super().__init__(pos)
        self.value = int(value)

    def __str__(self) -> str:
        return str(self.value)


class Var(Expr):
    """A named integer variable; create it with ``Model.var``."""

    __slots__ = ("name",)

    def __init__(self, name: str, pos: Position = None):
        super().__init__(pos)
        self.name = name

    def __str__(self) -> str:
        return self.name


class ListLiteral(Expr):
    """``[a, b, c]``: stands for one of its values, chosen independently per occurrence."""

    __slots__ = ("values",)

    def __init__(self, values: Iterable[int], pos: Position = None):
        super().__init__(pos)
        vals = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError("list literals hold ints only")
            vals.append(v)
        if not vals:
            raise ValueError("empty list literal")
        self.values = tuple(sorted(set(vals)))

    def __str__(self) -> str:
        return "[" + ", ".join(map(str, self.values)) + "]"


class BinOp(Expr):
    __slots__ = ("op", "left", "right")

    def __init__(self, op: str, left: Expr, right: Expr, pos: Position = None):
        super().__init__(pos if pos is not None else left.pos)
        self.op = op
        self.left = left
        self.right = right

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


class Neg(Expr):
    __slots__ = ("operand",)

    def __init__(self, operand: Expr, pos: Position = None):
        super().__init__(pos if pos is not None else operand.pos)
        self.operand = operand

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)

    def __str__(self) -> str:
        return f"(-{self.operand})"


class Pow(Expr):
    __slots__ = ("base", "exponent")

    def __init__(self, base: Expr, exponent: int, pos: Position = None):
        super().__init__(pos if pos is not None else base.pos)
        self.base = base
        self.exponent = exponent

    def children(self) -> tuple[Expr, ...]:
        return (self.base,)

    def __str__(self) -> str:
        return f"({self.base} ^ {self.exponent})"


class Constraint:
    """Base of relations and their conjunctions / disjunctions."""

    __slots__ = ("pos",)
    __bool__ = _bool_error

    def __or__(self, other: Constraint) -> Disjunction:
        if not isinstance(other, Constraint):
            return NotImplemented
        return Disjunction(_alternatives(self) + _alternatives(other))

    def __and__(self, other: Constraint) -> Constraint:
        if not isinstance(other, Constraint):
            return NotImplemented
        if isinstance(self, Disjunction) or isinstance(other, Disjunction):
            raise TypeError("(A | B) & C is not supported; add the constraints separately")
        return Conjunction(_relations(self) + _relations(other))

    def alternatives(self) -> tuple[Constraint, ...]:
        """The disjuncts; each is a Relation or a Conjunction of Relations."""
        return (self,)

    def relations(self) -> tuple[Relation, ...]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Constraint {self}>"


class Relation(Constraint):
    __slots__ = ("op", "left", "right")

    OPS = ("==", "!=", "<=", "<", ">=", ">")

    def __init__(self, op: str, left: Expr, right: Expr, pos: Position = None):
        if op not in self.OPS:
            raise ValueError(f"unknown relation {op!r}")
        self.op = op
        self.left = left
        self.right = right
        self.pos = pos if pos is not None else left.pos

    def relations(self) -> tuple[Relation, ...]:
        return (self,)

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


class Conjunction(Constraint):
    __slots__ = ("items",)

    def __init__(self, items: Sequence[Relation], pos: Position = None):
        self.items = tuple(items)
        self.pos = pos if pos is not None else self.items[0].pos

    def relations(self) -> tuple[Relation, ...]:
        return self.items

    def __str__(self) -> str:
        return " & ".join(f"({r})" for r in self.items)


class Disjunction(Constraint):
    __slots__ = ("items",)

    def __init__(self, items: Sequence[Constraint], pos: Position = None):
        self.items = tuple(items)
        self.pos = pos if pos is not None else self.items[0].pos

    def alternatives(self) -> tuple[Constraint, ...]:
        return self.items

    def relations(self) -> tuple[Relation, ...]:
        return tuple(r for alt in self.items for r in alt.relations())

    def __str__(self) -> str:
        return " | ".join(f"({a})" for a in self.items)


def _alternatives(c: Constraint) -> tuple[Constraint, ...]:
    return c.alternatives()


def _relations(c: Constraint) -> tuple[Relation, ...]:
    return c.relations()


class Objective:
    """``maximize`` or ``minimize`` an expression."""

    __slots__ = ("sense", "expr", "pos")

    def __init__(self, sense: str, expr: Expr | int, pos: Position = None):
        sense = sense.lower()
        if sense in ("max", "maximise"):
            sense = "maximize"
        elif sense in ("min", "minimise"):
            sense = "minimize"
        if sense not in ("maximize", "minimize"):
            raise ValueError(f"objective sense must be 'maximize' or 'minimize', not {sense!r}")
        expr = as_expr(expr)
        if any(isinstance(node, ListLiteral) for node in expr.walk()):
            raise ModelError("list literals are not allowed in the objective", *(expr.pos or (None, None)))
        self.sense = sense
        self.expr = expr
        self.pos = pos

    def __str__(self) -> str:
        return f"{self.sense} {self.expr}"


class Domain:
    """Initial domain of a variable: ``lo..hi`` (hi None = no bound), optional value set."""

    __slots__ = ("lo", "hi", "values")

    def __init__(self, lo: int = 1, hi: int | None = None, values: Iterable[int] | None = None):
        self.lo = lo
        self.hi = hi
        self.values = None if values is None else tuple(sorted(set(values)))


class Model:
    """A constraint problem: variables with domains, constraints, optional objective.

    >>> m = Model()
    >>> x, y = m.var("x", 1, 10), m.var("y", values=[8, 16, 32])
    >>> m.add(x * y <= 64, 64 % (x * y) == 0)
    >>> m.maximize(x * y)
    """

    def __init__(self) -> None:
        self._vars: dict[str, Var] = {}
        self._domains: dict[str, Domain] = {}
        self.constraints: list[Constraint] = []
        self.objective: Objective | None = None

    @classmethod
    def from_text(cls, text: str, *, strip_parens: bool = False) -> Model:
        """Parse a problem in the text syntax (see docs/solver.md)."""
        from .parser import parse_into

        model = cls()
        parse_into(model, text, strip_parens=strip_parens)
        return model

    def var(
        self,
        name: str,
        lo: int | None = 1,
        hi: int | None = None,
        *,
        values: Iterable[int] | None = None,
        pos: Position = None,
    ) -> Var:
        """Declare an integer variable with domain ``lo..hi`` and/or an explicit value set.

        ``lo`` defaults to 1 (variables are positive, as in ConstrINT); ``hi=None``
        means the bound must follow from the constraints.
        """
        if name in self._vars:
            raise ValueError(f"variable {name!r} is already declared")
        if not isinstance(name, str) or not name:
            raise ValueError("variable names must be non-empty strings")
        if lo is None:
            raise ValueError("variables need a finite lower bound")
        v = Var(name, pos)
        self._vars[name] = v
        self._domains[name] = Domain(lo, hi, values)
        return v

    def get_var(self, name: str, pos: Position = None) -> Var:
        """The variable named ``name``, declared with the default domain if new."""
        v = self._vars.get(name)
        if v is None:
            v = self.var(name, pos=pos)
        return v

    def __getitem__(self, name: str) -> Var:
        return self._vars[name]

    @property
    def variables(self) -> list[Var]:
        return list(self._vars.values())

    def domain(self, name: str) -> Domain:
        return self._domains[name]

    def add(self, *constraints: Constraint | str) -> None:
        """Add constraints (objects, or text in the problem syntax)."""
        for c in constraints:
            if isinstance(c, str):
                from .parser import parse_into

                parse_into(self, c)
            elif isinstance(c, Constraint):
                for node in _constraint_exprs(c):
                    for sub in node.walk():
                        if isinstance(sub, Var) and self._vars.get(sub.name) is not sub:
                            raise ValueError(f"variable {sub.name!r} does not belong to this model")
                self.constraints.append(c)
            else:
                raise TypeError(f"expected a constraint, got {type(c).__name__} (did you compare ints?)")

    def maximize(self, expr: Expr | int) -> None:
        self.objective = Objective("maximize", expr)

    def minimize(self, expr: Expr | int) -> None:
        self.objective = Objective("minimize", expr)

    def copy(self) -> Model:
        """A shallow copy: same Var and constraint objects, separate lists."""
        m = Model()
        m._vars = dict(self._vars)
        m._domains = dict(self._domains)
        m.constraints = list(self.constraints)
        m.objective = self.objective
        return m

    def check(self, solution: Mapping[str, int]) -> list[Constraint]:
        """The constraints violated by ``solution`` (empty list: it is a solution).

        Domain violations are reported as the equivalent relation on the variable.
        """
        names = list(self._vars)
        values = [solution[n] for n in names]
        violated: list[Constraint] = []
        for n in names:
            d = self._domains[n]
            v = solution[n]
            var = self._vars[n]
            if v < d.lo:
                violated.append(Relation(">=", var, Const(d.lo)))
            elif d.hi is not None and v > d.hi:
                violated.append(Relation("<=", var, Const(d.hi)))
            elif d.values is not None and v not in d.values:
                violated.append(Relation("==", var, ListLiteral(d.values)))
        index = {n: i for i, n in enumerate(names)}
        violated += [c for c in self.constraints if not compile_check(c, index)(values)]
        return violated

    def solve(self, **kwargs):
        """Shortcut for ``fusedrnn.tune.solve(self, **kwargs)``."""
        from .solver import solve

        return solve(self, **kwargs)

    def __str__(self) -> str:
        lines = []
        for name, d in self._domains.items():
            if d.values is not None:
                lines.append(f"{name} == [{', '.join(map(str, d.values))}];")
            if d.lo != 1 or d.hi is not None:
                lines.append(f"{d.lo} <= {name};" + (f" {name} <= {d.hi};" if d.hi is not None else ""))
        lines += [f"{c};" for c in self.constraints]
        if self.objective is not None:
            lines.append(f"# objective: {self.objective}")
        return "\n".join(lines)


def _constraint_exprs(c: Constraint) -> Iterator[Expr]:
    for r in c.relations():
        yield r.left
        yield r.right


# Exact evaluation.  Kept independent of the propagation code so that every
# solution the search returns is re-checked by a separate, obviously correct path.

Env = list  # variable values by index


def compile_expr(expr: Expr, index: Mapping[str, int], lists: dict[int, int]) -> Callable[[Env, list], int]:
    """Compile to ``f(values, choices) -> int``; raises ZeroDivisionError on x // 0, x % 0.

    ``choices[k]`` is the current value of the k-th list literal (``lists`` maps
    ``id(literal)`` to k).
    """
    if isinstance(expr, Const):
        c = expr.value
        return lambda env, ch: c
    if isinstance(expr, Var):
        i = index[expr.name]
        return lambda env, ch: env[i]
    if isinstance(expr, ListLiteral):
        k = lists.setdefault(id(expr), len(lists))
        return lambda env, ch: ch[k]
    if isinstance(expr, Neg):
        f = compile_expr(expr.operand, index, lists)
        return lambda env, ch: -f(env, ch)
    if isinstance(expr, Pow):
        f = compile_expr(expr.base, index, lists)
        e = expr.exponent
        return lambda env, ch: f(env, ch) ** e
    if isinstance(expr, BinOp):
        a = compile_expr(expr.left, index, lists)
        b = compile_expr(expr.right, index, lists)
        op = expr.op
        if op == "+":
            return lambda env, ch: a(env, ch) + b(env, ch)
        if op == "-":
            return lambda env, ch: a(env, ch) - b(env, ch)
        if op == "*":
            return lambda env, ch: a(env, ch) * b(env, ch)
        if op == "//":
            return lambda env, ch: a(env, ch) // b(env, ch)
        if op == "%":
            return lambda env, ch: a(env, ch) % b(env, ch)
    raise TypeError(f"unknown expression node {expr!r}")


_CMP = {
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
    "<=": lambda x, y: x <= y,
    "<": lambda x, y: x < y,
    ">=": lambda x, y: x >= y,
    ">": lambda x, y: x > y,
}


def compile_check(c: Constraint, index: Mapping[str, int]) -> Callable[[Env], bool]:
    """Compile a constraint to ``f(values) -> bool``.

    A relation whose evaluation divides by zero is false.  List literals are
    existential: an alternative holds if some choice of values for its list
    literals satisfies all of its relations.
    """
    alt_checks = []
    for alt in c.alternatives():
        lists: dict[int, int] = {}
        literal_values: list[tuple[int, ...]] = []
        rels = []
        for r in alt.relations():
            left = compile_expr(r.left, index, lists)
            right = compile_expr(r.right, index, lists)
            rels.append((left, _CMP[r.op], right))
        for r in alt.relations():
            for side in (r.left, r.right):
                for node in side.walk():
                    if isinstance(node, ListLiteral) and lists[id(node)] == len(literal_values):
                        literal_values.append(node.values)
        alt_checks.append((tuple(rels), tuple(literal_values)))

    def holds(rels, env, ch) -> bool:
        try:
            for left, cmp, right in rels:
                if not cmp(left(env, ch), right(env, ch)):
                    return False
        except ZeroDivisionError:
            return False
        return True

    def check(env: Env) -> bool:
        for rels, literal_values in alt_checks:
            if not literal_values:
                if holds(rels, env, ()):
                    return True
            else:
                for ch in itertools.product(*literal_values):
                    if holds(rels, env, ch):
                        return True
        return False

    return check
