"""Search: root propagation, bounded-variable check, DFS with propagation, branch and bound."""

from __future__ import annotations

import gc
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import gcd

from . import _nodes
from ._arith import INF, Empty
from ._nodes import (
    EXPLICIT_LIMIT,
    CConst,
    CFloorDiv,
    CMod,
    CPow,
    CProd,
    CSum,
    CVar,
    Node,
    RDiv,
    Rel,
    REq,
    REqDerived,
    REqVar,
    REqVars,
    RLe,
    RLeDerived,
    RMod,
    RNe,
    ROr,
    Store,
)
from .model import (
    BinOp,
    Const,
    Constraint,
    Expr,
    ListLiteral,
    Model,
    ModelError,
    Neg,
    Objective,
    Pow,
    Relation,
    Var,
    compile_check,
    compile_expr,
)

OPTIMAL = "optimal"
FEASIBLE = "feasible"
INFEASIBLE = "infeasible"
TIMEOUT = "timeout"

# Domains up to this size are branched on value by value, larger ones are split in two.
ENUMERATE_LIMIT = 8
# Revisions per propagation before it is given up as creeping (bounds moving by a few values per
# revision, e.g. x < y; y < x over a wide range): CREEP_CAPS times 50 per propagator + 2000.  The
# delayed propagators get a turn after the first cap; over ranges of 2^40 each further cap is
# wasted work at every search node.
CREEP_CAPS = 2
# Rounds of constructive disjunction at the root.
ROOT_ROUNDS = 4
# Moduli of the residue masks on equalities with powers: 64 and 27 see squares and cubes modulo powers
# of 2 and 3 a few steps deep (a^2 + b^2 == 2 c^2 with b = 4 mod 8 and 8 | c is refuted modulo 64, not
# 16), 25 and 7 the next primes.  Masks are bit sets of at most 64 residues; each costs a few cached
# mask operations per term and revision.
MASK_MODULI = (64, 27, 25, 7)


@dataclass
class Stats:
    """Search statistics."""

    nodes: int = 0  # search nodes (branches tried)
    failures: int = 0  # branches refuted by propagation or the final check
    propagations: int = 0  # propagator runs
    solutions: int = 0  # solutions found (improving ones, under an objective)
    time: float = 0.0  # seconds, parse excluded


@dataclass
class Result:
    """Outcome of ``solve``.

    ``status`` is "optimal" (objective given, optimum proven), "feasible" (no
    objective, ``solution`` satisfies all constraints), "infeasible" (proven: no
    solution) or "timeout" (``solution`` is the best found so far, or None).
    ``solutions`` is only filled with ``all_solutions=True``.
    """

    status: str
    solution: dict[str, int] | None = None
    objective: int | None = None
    solutions: list[dict[str, int]] | None = None
    stats: Stats = field(default_factory=Stats)

    def to_dict(self, *, include_all: bool = False, include_stats: bool = False) -> dict:
        """The CLI's JSON object."""
        out: dict = {"status": self.status, "solution": self.solution, "objective": self.objective}
        if include_all:
            out["solutions"] = self.solutions
        if include_stats:
            out["stats"] = {
                "nodes": self.stats.nodes,
                "failures": self.stats.failures,
                "propagations": self.stats.propagations,
                "solutions": self.stats.solutions,
                "time": round(self.stats.time, 6),
            }
        return out


class _Timeout(Exception):
    pass


class _Compiler:
    """Turns a Model into nodes and relation propagators over one Store."""

    def __init__(self, model: Model):
        self.model = model
        self.store = Store()
        self.names = [v.name for v in model.variables]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.var_nodes: list[CVar] = []
        # id(ListLiteral) -> hidden variable, per alternative: a list is one choice
        # per occurrence, even if a builder user reuses the same object elsewhere.
        self.aux: dict[int, CVar] = {}
        self.aux_uses: dict[int, int] = {}  # hidden variable index -> occurrences
        for name in self.names:
            d = model.domain(name)
            lo = d.lo
            hi = INF if d.hi is None else d.hi
            vals = None
            if d.values is not None:
                vals = tuple(v for v in d.values if lo <= v <= hi)
                if vals:
                    lo, hi = vals[0], vals[-1]
                else:
                    lo, hi = 1, 0  # empty: caught by the root check
            self._new_var(lo, hi, vals)

    def _new_var(self, lo, hi, vals) -> CVar:
        st = self.store
        st.L.append(lo)
        st.H.append(hi)
        st.V.append(vals)
        st.C.append(None)
        node = CVar(len(st.L) - 1, st)
        self.var_nodes.append(node)
        return node

    # Expressions.

    def node(self, e: Expr) -> Node:
        if isinstance(e, Const):
            return CConst(e.value)
        if isinstance(e, Var):
            return self.var_nodes[self.index[e.name]]
        if isinstance(e, ListLiteral):
            got = self.aux.get(id(e))
            if got is None:
                got = self._new_var(e.values[0], e.values[-1], e.values)
                self.aux[id(e)] = got
            self.aux_uses[got.i] = self.aux_uses.get(got.i, 0) + 1
            return got
        if isinstance(e, Neg) or (isinstance(e, BinOp) and e.op in "+-"):
            return self.linear(e, 0)
        if isinstance(e, BinOp):
            if e.op == "*":
                if isinstance(e.left, Const) or isinstance(e.right, Const):
                    return self.linear(e, 0)
                return self.product(e)
            if e.op == "//":
                return CFloorDiv(self.node(e.left), self.node(e.right))
            if e.op == "%":
                return CMod(self.node(e.left), self.node(e.right))
        if isinstance(e, Pow):
            if e.exponent == 1:
                return self.node(e.base)
            return CPow(self.node(e.base), e.exponent)
        raise TypeError(f"unknown expression node {e!r}")

    def _collect_linear(self, e: Expr, coef: int, terms: dict, const: list[int]) -> None:
        if isinstance(e, Const):
            const[0] += coef * e.value
        elif isinstance(e, Neg):
            self._collect_linear(e.operand, -coef, terms, const)
        elif isinstance(e, BinOp) and e.op in "+-":
            self._collect_linear(e.left, coef, terms, const)
            self._collect_linear(e.right, coef if e.op == "+" else -coef, terms, const)
        elif isinstance(e, BinOp) and e.op == "*" and isinstance(e.left, Const):
            self._collect_linear(e.right, coef * e.left.value, terms, const)
        elif isinstance(e, BinOp) and e.op == "*" and isinstance(e.right, Const):
            self._collect_linear(e.left, coef * e.right.value, terms, const)
        else:
            node = self.node(e)
            if isinstance(node, CConst):
                const[0] += coef * node.c
                return
            key = id(node)  # variables share one node, so x + x merges
            if key in terms:
                terms[key][0] += coef
            else:
                terms[key] = [coef, node]

    def linear(self, e: Expr, offset: int) -> Node:
        terms: dict = {}
        const = [offset]
        self._collect_linear(e, 1, terms, const)
        items = [(c, n) for c, n in terms.values() if c != 0]
        if not items:
            return CConst(const[0])
        if len(items) == 1 and items[0][0] == 1 and const[0] == 0:
            return items[0][1]
        return CSum(const[0], [c for c, _ in items], [n for _, n in items])

    def product(self, e: Expr) -> Node:
        factors: list[Expr] = []
        k = 1
        stack = [e]
        while stack:
            f = stack.pop()
            if isinstance(f, BinOp) and f.op == "*":
                stack.append(f.right)
                stack.append(f.left)
            elif isinstance(f, Const):
                k *= f.value
            else:
                factors.append(f)
        # x * x * y -> x^2 * y: a power propagates better than repeated factors.
        counts: dict[str, int] = {}
        others: list[Expr] = []
        for f in factors:
            if isinstance(f, Var):
                counts[f.name] = counts.get(f.name, 0) + 1
            else:
                others.append(f)
        nodes: list[Node] = []
        for name, count in counts.items():
            v = self.var_nodes[self.index[name]]
            nodes.append(v if count == 1 else CPow(v, count))
        nodes += [self.node(f) for f in others]
        if not nodes:
            return CConst(k)
        if len(nodes) == 1 and k == 1:
            return nodes[0]
        return CProd(k, nodes)

    # Relations.

    def relation(self, r: Relation) -> Rel:
        op, a, b = r.op, r.left, r.right
        if op == "==":
            for x, y in ((a, b), (b, a)):
                if isinstance(x, BinOp) and x.op == "%" and isinstance(y, Const) and y.value == 0:
                    return RDiv(self.node(x.left), self.node(x.right))
            na = self.node(a) if isinstance(a, (Var, ListLiteral)) else None
            nb = self.node(b) if isinstance(b, (Var, ListLiteral)) else None
            if na is not None and nb is not None:
                if isinstance(a, ListLiteral) and not isinstance(b, ListLiteral):
                    na, nb, a, b = nb, na, b, a
                return REqVars(na, nb, isinstance(b, ListLiteral))
            if nb is not None:
                return REqVar(self.node(a), nb)
            if na is not None:
                return REqVar(self.node(b), na)
            return REq(self.linear(BinOp("-", a, b), 0), 0)
        if op == "!=":
            return RNe(self.node(a), self.node(b))
        if op == "<=":
            return RLe(self.linear(BinOp("-", a, b), 0), 0)
        if op == "<":
            return RLe(self.linear(BinOp("-", a, b), 0), -1)
        if op == ">=":
            return RLe(self.linear(BinOp("-", b, a), 0), 0)
        return RLe(self.linear(BinOp("-", b, a), 0), -1)

    def alternative(self, alt: Constraint) -> list[Rel]:
        self.aux = {}
        rels = []
        for r in alt.relations():
            rel = self.relation(r)
            rels.append(rel)
            if isinstance(rel, (REq, REqVar)):
                mod = _modular(rel)
                if mod is not None:
                    rels.append(mod)
        return rels

    def constraint(self, c: Constraint) -> list[Rel]:
        """The propagators of one constraint: one relation or disjunction, plus the delayed congruence
        propagators of a constraint that is not a disjunction."""
        alts = c.alternatives()
        if len(alts) == 1:
            rels = self.alternative(alts[0])
            base = [r for r in rels if not isinstance(r, RMod)]
            mods = [r for r in rels if isinstance(r, RMod)]
            return [base[0] if len(base) == 1 else ROr([base])] + mods
        return [ROr([self.alternative(alt) for alt in alts])]

    def fix_private_lists(self, rels: list[Rel]) -> None:
        # A list literal used twice (a chain like x == [1, 2] == y) is not private.
        shared = {i for i, n in self.aux_uses.items() if n > 1}
        for r in _all_relations(rels):
            if isinstance(r, REqVars) and r.y.i in shared:
                r.y_private = False


def _walk(node: Node):
    yield node
    if isinstance(node, (CSum, CProd)):
        for n in node.nodes:
            yield from _walk(n)
    elif isinstance(node, CPow):
        yield from _walk(node.base)
    elif isinstance(node, (CFloorDiv, CMod)):
        yield from _walk(node.a)
        yield from _walk(node.b)


def _modular(rel: REq | REqVar) -> Rel | None:
    """The congruence rules for an equality over a sum, product, power or remainder, with residue masks
    (MASK_MODULI) where it has powers of variables (for products and sums the classes carry what the
    masks would find in the common cases, at a fraction of the cost); None for other equalities."""
    nodes = list(_walk(rel.e))
    if not any(isinstance(n, (CSum, CProd, CPow, CMod)) for n in nodes):
        return None
    moduli = MASK_MODULI if any(isinstance(n, CPow) and n.e > 1 for n in nodes) else ()
    mvars = {n.i: n for n in nodes if isinstance(n, CVar)}
    if isinstance(rel, REqVar):
        mvars[rel.v.i] = rel.v
    return RMod(rel, moduli, tuple(mvars.values()))


def divisor_rules(rels: list[Rel], var_nodes: list[CVar]) -> list[Rel]:
    """Relations implied by divisibility between positive variables, for the top-level relations ``rels``
    at the root (docs/solver.md, "Number-theoretic rules"):

    * transitivity: z | y and y | x give z | x;
    * sums: y | x and x == sum(terms) + const where y divides every term but one, of coefficient +-1,
      give y | that term (or y | const when it divides every term);
    * order cycles: a positive multiple is at least its divisor (x >= y), so with the difference
      relations (x - y >= w) a cycle of total weight >= 1 is a proof of infeasibility;
    * strict divisors: x % y == 0 and x != y (from y < x-style relations or chains of them, or x != y)
      mean x = q * y with an integer q >= 2, so 2 * y <= x; if c other strict divisors of x are known to be
      larger than y, the c + 1 quotients are distinct integers >= 2 and x / y is the largest:
      (c + 2) * y <= x.  Chains of k strict divisors then bound their top by 2^(k - 1) times their bottom
      through the bounds propagation of these sums.
    """
    L = var_nodes[0].L if var_nodes else []
    divides: dict[int, set[int]] = {}  # y -> the x with y | x (positive variables only)
    for r in rels:
        if isinstance(r, RDiv) and isinstance(r.a, CVar) and isinstance(r.b, CVar) and r.a is not r.b:
            if L[r.a.i] >= 1 and L[r.b.i] >= 1:
                divides.setdefault(r.b.i, set()).add(r.a.i)
    if not divides:
        return []
    out: list[Rel] = []
    sums = []
    for r in rels:
        e = getattr(r, "e", None)
        if isinstance(r, (REq, REqVar)) and isinstance(e, CSum) and all(isinstance(n, CVar) for n in e.nodes):
            terms = [(a, n.i) for a, n in zip(e.coefs, e.nodes)]
            const = e.const
            if isinstance(r, REqVar):
                terms.append((-1, r.v.i))
            else:
                const -= r.c
            if all(L[i] >= 1 for _, i in terms):
                sums.append((terms, const))
    for _ in range(4):
        # transitive closure, then the sum rule, until nothing new
        changed = True
        while changed:
            changed = False
            for y in list(divides):
                for x in list(divides[y]):
                    for z in divides.get(x, ()):
                        if z not in divides[y] and z != y:
                            divides[y].add(z)
                            changed = True
        new = False
        for terms, const in sums:
            for y in {i for _, i in terms} | {z for z, xs in divides.items() if any(i in xs for _, i in terms)}:
                multiples = divides.get(y, set()) | {y}
                rest = [(a, i) for a, i in terms if i not in multiples]
                if not rest and const:
                    out.append(RDiv(CConst(abs(const)), var_nodes[y]))
                elif len(rest) == 1 and not const and abs(rest[0][0]) == 1 and rest[0][1] != y:
                    x = rest[0][1]
                    if x not in divides.setdefault(y, set()):
                        divides[y].add(x)
                        out.append(RDiv(var_nodes[x], var_nodes[y]))
                        new = True
        if not new:
            break

    # Order: edges y -> (x, w) for x >= y + w with w >= 0 (difference relations, multiples).
    edges: dict[int, list[tuple[int, int]]] = {}
    unequal: set[tuple[int, int]] = set()
    for r in rels:
        if isinstance(r, RLe) and isinstance(r.e, CSum) and len(r.e.nodes) == 2:
            (a1, a2), (n1, n2) = r.e.coefs, r.e.nodes
            if isinstance(n1, CVar) and isinstance(n2, CVar) and sorted((a1, a2)) == [-1, 1]:
                y, x = (n1, n2) if a1 == 1 else (n2, n1)
                w = r.e.const - r.c  # y - x + const <= c
                if w >= 0 and r.c != INF:
                    edges.setdefault(y.i, []).append((x.i, w))
        elif isinstance(r, REqVars):
            edges.setdefault(r.x.i, []).append((r.y.i, 0))
            edges.setdefault(r.y.i, []).append((r.x.i, 0))
        elif isinstance(r, RNe) and isinstance(r.a, CVar) and isinstance(r.b, CVar):
            unequal.add((r.a.i, r.b.i))
            unequal.add((r.b.i, r.a.i))
    for y, xs in divides.items():
        for x in xs:
            edges.setdefault(y, []).append((x, 0))

    def above(y: int) -> set[int]:
        """The variables proven greater than y."""
        seen = {(y, False)}
        stack = [(y, False)]
        found = set()
        while stack:
            v, strict = stack.pop()
            for x, w in edges.get(v, ()):
                state = (x, strict or w > 0)
                if state not in seen:
                    seen.add(state)
                    stack.append(state)
                    if state[1]:
                        found.add(x)
        return found

    greater = {y: above(y) for y in divides}
    if any(y in g for y, g in greater.items()):
        return [REqDerived(CConst(1), 0)]  # y > ... >= y: no solution
    factor: dict[tuple[int, int], int] = {}  # (x, y) -> f with f * y <= x
    for x in {x for xs in divides.values() for x in xs}:
        ys = [y for y, xs in divides.items() if x in xs and (x in greater[y] or (x, y) in unequal)]
        for y in ys:
            f = 2 + sum(1 for z in ys if z != y and z in greater[y])
            factor[x, y] = f
            out.append(RLeDerived(CSum(0, [f, -1], [var_nodes[y], var_nodes[x]]), 0))
    out += strict_divisor_sums(rels, var_nodes, factor)
    return out


def _linear_forms(rels: list[Rel]):
    """The top-level linear relations over variables as ``sum(a_i x_i) <= R`` ({i: a_i}, R)."""
    for r in rels:
        e = getattr(r, "e", None)
        if not isinstance(e, CSum) or not all(isinstance(n, CVar) for n in e.nodes):
            continue
        form: dict[int, int] = {}
        for a, n in zip(e.coefs, e.nodes):
            form[n.i] = form.get(n.i, 0) + a
        if isinstance(r, RLe) and r.c != INF:
            yield form, r.c - e.const
        elif isinstance(r, (REq, REqVar)):
            bound = (r.c if isinstance(r, REq) else 0) - e.const
            if isinstance(r, REqVar):
                form[r.v.i] = form.get(r.v.i, 0) - 1
            yield form, bound
            yield {i: -a for i, a in form.items()}, -bound


def strict_divisor_sums(rels: list[Rel], var_nodes: list[CVar], factor: dict) -> list[Rel]:
    """Sums of strict divisors are bounded by the number they divide: in a_x x - sum(b_y y) <= R with
    every y a strict divisor of x (f_y y <= x, see divisor_rules) and a_x, b_y > 0, replace each y by its
    bound: (a_x - sum(b_y / f_y)) x <= R (two strict divisors a < b of x add up to at most 5 x / 6, so
    a + b == x has no solution)."""
    out: list[Rel] = []
    for form, bound in _linear_forms(rels):
        for x, a_x in form.items():
            others = [(y, -a) for y, a in form.items() if y != x]
            if a_x <= 0 or not others or any(b <= 0 or (x, y) not in factor for y, b in others):
                continue
            scale = 1
            for y, _ in others:
                scale = scale * factor[x, y] // gcd(scale, factor[x, y])
            coef = scale * a_x - sum(scale * b // factor[x, y] for y, b in others)
            if coef:
                out.append(RLeDerived(CSum(0, [coef], [var_nodes[x]]), scale * bound))
            elif bound < 0:
                out.append(REqDerived(CConst(1), 0))
    return out


def _term_key(node: Node):
    """Equal keys for structurally equal monomials (variables, powers and products of them)."""
    if isinstance(node, CVar):
        return ("v", node.i)
    if isinstance(node, CPow) and isinstance(node.base, CVar):
        return ("p", node.base.i, node.e)
    if isinstance(node, CProd) and all(isinstance(n, (CVar, CPow)) for n in node.nodes):
        keys = [_term_key(n) for n in node.nodes]
        if all(k[0] != "id" for k in keys):
            return ("x", node.k, tuple(sorted(keys)))
    return ("id", id(node))


# Equalities with powers combined pairwise at the root (at most this many; their pairs are checked).
COMBINE_LIMIT = 8


def combined_equalities(rels: list[Rel]) -> list[Rel]:
    """Combinations of two equalities with powers that cancel a shared monomial: E1 == 0 and E2 == 0 give
    a * E1 + b * E2 == 0, on which the congruence and residue rules see more (a^2 + b^2 == c^2 and
    a^2 + b^2 + c^2 == 8 s + 5 give 2 c^2 == 8 s + 5, which is odd against even)."""
    eqs = [r.base for r in rels if isinstance(r, RMod) and r.moduli and r.v is None and isinstance(r.e, CSum)]
    if not 2 <= len(eqs) <= COMBINE_LIMIT:
        return []
    forms = []
    for eq in eqs:
        terms: dict = {}
        for a, n in zip(eq.e.coefs, eq.e.nodes):
            key = _term_key(n)
            if key in terms:
                terms[key][0] += a
            else:
                terms[key] = [a, n]
        forms.append((eq.e.const - eq.c, terms))
    out: list[Rel] = []
    for x in range(len(forms)):
        for y in range(x + 1, len(forms)):
            (k1, t1), (k2, t2) = forms[x], forms[y]
            for key in [k for k in t1 if k in t2]:
                c1, c2 = t1[key][0], t2[key][0]
                g = gcd(c1, c2)
                f1, f2 = c2 // g, -(c1 // g)
                merged: dict = {}
                for t, f in ((t1, f1), (t2, f2)):
                    for k, (a, n) in t.items():
                        if k in merged:
                            merged[k][0] += f * a
                        else:
                            merged[k] = [f * a, n]
                items = [(a, n) for a, n in merged.values() if a]
                const = f1 * k1 + f2 * k2
                if not items:
                    if const:
                        out.append(REqDerived(CConst(const), 0))
                    continue
                eq = REqDerived(CSum(const, [a for a, _ in items], [n for _, n in items]), 0)
                out.append(eq)
                mod = _modular(eq)
                if mod is not None:
                    out.append(mod)
    return out


def _class_of(snap, i: int):
    """Variable i's congruence class in a snapshot (0, v) when fixed to v, (1, 0) when none."""
    if snap[0][i] == snap[1][i]:
        return (0, snap[0][i])
    return snap[3][i] or (1, 0)


def _all_relations(rels: list[Rel]):
    for r in rels:
        if isinstance(r, ROr):
            for alt in r.alts:
                yield from alt
        else:
            yield r


def _polarity(node: Node, sign: int, out: dict[int, int], L: list, H: list) -> None:
    """Record, per variable, whether increasing it increases (+1) or decreases (-1) the
    node's value; 0 when mixed or unknown.  Used to order values toward the optimum."""

    def mark(i: int, s: int) -> None:
        prev = out.get(i)
        out[i] = s if prev is None or prev == s else 0

    if isinstance(node, CVar):
        mark(node.i, sign)
    elif isinstance(node, CSum):
        for a, n in zip(node.coefs, node.nodes):
            _polarity(n, sign if a > 0 else -sign, out, L, H)
    elif isinstance(node, CProd):
        nonneg = True
        for n in node.nodes:
            try:
                lo, _ = n.fwd()
            except Empty:
                lo = -1
            nonneg = nonneg and lo >= 0
        s = sign if node.k > 0 else -sign
        for n in node.nodes:
            _polarity(n, s if nonneg else 0, out, L, H)
    elif isinstance(node, CPow):
        try:
            lo, _ = node.base.fwd()
        except Empty:
            lo = -1
        _polarity(node.base, sign if (node.e % 2 == 1 or lo >= 0) else 0, out, L, H)
    elif isinstance(node, CFloorDiv):
        _polarity(node.a, sign, out, L, H)
        _polarity(node.b, 0, out, L, H)
    elif isinstance(node, CMod):
        _polarity(node.a, 0, out, L, H)
        _polarity(node.b, 0, out, L, H)


class Solver:
    def __init__(self, model: Model, objective: Objective | None, all_solutions: bool, timeout: float | None):
        self.t0 = time.perf_counter()
        self.deadline = None if timeout is None else self.t0 + timeout
        self.model = model
        self.objective = objective
        self.all_solutions = all_solutions
        self.stats = Stats()
        comp = _Compiler(model)
        self.comp = comp
        self.store = comp.store
        self.names = comp.names
        self.n_user = len(comp.names)
        rels = [r for c in model.constraints for r in comp.constraint(c)]
        comp.fix_private_lists(rels)
        self.obj_node = comp.node(objective.expr) if objective is not None else None
        self.rels: list[Rel] = rels
        # Exact checks, independent of propagation: compiled at the first full assignment (a problem
        # proven infeasible never needs them).
        self.checks: list | None = None
        self.obj_eval = None
        self.domain_checks: list = []
        self.bound_rel: RLe | None = None
        self.incumbent: list[int] | None = None
        self.incumbent_value: int | None = None
        self.found: list[tuple[int | None, list[int]]] = []
        self._set_watchers(self.rels)

    def _set_watchers(self, rels: list[Rel]) -> None:
        self.props = [r.prop for r in rels]
        n = len(self.store.L)
        self.watch: list[list[int]] = [[] for _ in range(n)]
        for ci, r in enumerate(rels):
            for v in sorted(r.var_indices()):
                self.watch[v].append(ci)
        self.inq = bytearray(len(rels))
        self.delayed = bytes(r.delayed for r in rels)
        self.cap = 50 * len(rels) + 2000

    def _check_time(self) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise _Timeout

    def propagate(self, start) -> bool:
        """Run propagators to a fixpoint (or the revision cap) from the given relation ids.  Delayed
        propagators (the congruence rules) wait in a second queue until the first one is empty."""
        props = self.props
        watch = self.watch
        inq = self.inq
        delayed = self.delayed
        ch = self.store.changed
        q = []
        dq = []
        for c in start:
            if not inq[c]:
                inq[c] = 1
                (dq if delayed[c] else q).append(c)
        qi = 0
        dqi = 0
        cap = self.cap
        ok = True
        urgent = False  # bounds are creeping: let the delayed ones (which may end it) go first
        try:
            while True:
                if dqi < len(dq) and (urgent or qi == len(q)):
                    c = dq[dqi]
                    dqi += 1
                elif qi < len(q):
                    c = q[qi]
                    qi += 1
                else:
                    break
                inq[c] = 0
                ch.clear()
                if not props[c]():
                    ok = False
                    break
                if ch:
                    for v in ch:
                        for c2 in watch[v]:
                            if not inq[c2] and c2 != c:
                                inq[c2] = 1
                                if delayed[c2]:
                                    dq.append(c2)
                                else:
                                    q.append(c2)
                if urgent and dqi == len(dq):
                    urgent = False
                if qi + dqi > cap:
                    # Slow convergence (bounds creeping by one): stop, search will finish it.
                    if self.deadline is not None:
                        self._check_time()
                    cap += self.cap
                    urgent = True
                    if qi + dqi > CREEP_CAPS * self.cap:
                        break
        except Empty:
            ok = False
        finally:
            for c in q[qi:]:
                inq[c] = 0
            for c in dq[dqi:]:
                inq[c] = 0
            self.stats.propagations += qi + dqi
        return ok

    # Root.

    def snapshot(self):
        st = self.store
        return st.L[:], st.H[:], st.V[:], st.C[:]

    def restore(self, snap) -> None:
        st = self.store
        st.L[:] = snap[0]
        st.H[:] = snap[1]
        st.V[:] = snap[2]
        st.C[:] = snap[3]

    def root(self) -> bool:
        """Propagate at the root, with constructive disjunction over ORs."""
        st = self.store
        for i in range(len(st.L)):
            if st.L[i] > st.H[i]:
                return False
        if not self.propagate(range(len(self.rels))):
            return False
        derived = divisor_rules(self.rels, self.comp.var_nodes) + combined_equalities(self.rels)
        if derived:
            self.rels = self.rels + derived
            self._set_watchers(self.rels)
            if not self.propagate(range(len(self.rels))):
                return False
        ors = [ci for ci, r in enumerate(self.rels) if isinstance(r, ROr)]
        for _ in range(ROOT_ROUNDS if ors else 0):
            changed = False
            for ci in ors:
                self._check_time()
                res = self._constructive(self.rels[ci])
                if res is None:
                    return False
                if res:
                    changed = True
                    if not self.propagate(range(len(self.rels))):
                        return False
            if not changed:
                break
        return True

    def _constructive(self, r: ROr):
        """Intersect the domains with the union of what each alternative allows.
        Returns None if no alternative is possible, else whether anything changed."""
        st = self.store
        base = self.snapshot()
        outcomes = []
        for alt in r.alts:
            if ROr.alt_status(alt) < 0:
                continue
            ok = True
            st.changed.clear()
            try:
                for rel in alt:
                    if not rel.prop():
                        ok = False
                        break
            except Empty:
                ok = False
            if ok:
                touched = list(st.changed)
                ok = self.propagate([c for v in touched for c in self.watch[v]])
            if ok:
                outcomes.append(self.snapshot())
            self.restore(base)
        if not outcomes:
            return None
        changed = False
        var_nodes = self.comp.var_nodes
        for i in range(len(st.L)):
            lo = min(o[0][i] for o in outcomes)
            hi = max(o[1][i] for o in outcomes)
            node = var_nodes[i]
            if lo > st.L[i] or hi < st.H[i]:
                node.bwd(lo, hi)
                changed = True
            if all(o[2][i] is not None for o in outcomes):
                union = set()
                for o in outcomes:
                    vals = o[2][i]
                    union.update(vals[bisect_left(vals, o[0][i]) : bisect_right(vals, o[1][i])])
                if len(union) < node.size():
                    node._set_values(tuple(sorted(union)))
                    changed = True
            elif st.V[i] is None:
                # The finest class that holds every outcome's class (a fixed value v is the class (0, v)).
                m, r = _class_of(outcomes[0], i)
                for o in outcomes[1:]:
                    mo, ro = _class_of(o, i)
                    m = gcd(m, mo, ro - r)
                    if m == 1:
                        break
                if m > 1 and st.C[i] != (m, r % m):
                    if not node.congr(m, r):
                        return None
                    changed = True
        return changed

    def check_bounded(self) -> None:
        st = self.store
        unbounded = [i for i in range(self.n_user) if st.H[i] == INF]
        if not unbounded:
            return
        names = [self.names[i] for i in unbounded]
        first = self.model[names[0]]
        line, col = first.pos if first.pos else (None, None)
        listed = ", ".join(repr(n) for n in names)
        what = "variable" if len(names) == 1 else "variables"
        raise ModelError(
            f"{what} {listed} {'has' if len(names) == 1 else 'have'} no upper bound: no constraint "
            f"limits {'it' if len(names) == 1 else 'them'} (add e.g. '{names[0]} <= 64;')",
            line,
            col,
        )

    def simplify(self) -> None:
        """Drop relations that hold everywhere in the root domains; shrink ORs."""
        kept: list[Rel] = []
        for r in self.rels:
            if isinstance(r, ROr):
                alts = []
                entailed = False
                for alt in r.alts:
                    s = ROr.alt_status(alt)
                    if s < 0:
                        continue
                    rest = [x for x in alt if not x.entailed()]
                    if not rest:
                        entailed = True
                        break
                    alts.append(rest)
                if entailed:
                    continue
                if len(alts) == 1:
                    kept.extend(alts[0])
                else:
                    kept.append(ROr(alts))
            elif isinstance(r, RMod) and not r.square_pairs and not r.wide(_nodes.CONG_MIN_RANGE):
                continue  # domains only shrink: it would never run
            elif not r.entailed():
                kept.append(r)
        self.rels = kept

    # Search.

    def run(self) -> Result:
        try:
            self._check_time()
            feasible = self.root()
        except _Timeout:
            return self._result(TIMEOUT)
        if feasible:
            self.check_bounded()
        else:
            # An infeasible root is a proof even with unbounded variables.
            return self._result(INFEASIBLE)
        self.simplify()
        rels = self.rels
        if self.obj_node is not None and not self.all_solutions:
            obj = self.obj_node
            if self.objective.sense == "maximize":
                e = CSum(0, [-1], [obj])
            else:
                e = obj
            self.bound_rel = RLe(e, INF)
            rels = rels + [self.bound_rel]
        self.rels = rels
        self._set_watchers(rels)
        try:
            # (the limit can run out in a creeping propagation here too: that is no proof)
            if not self.propagate(range(len(rels))):
                return self._result(INFEASIBLE)
            self._order_setup()
            self._search()
        except _Timeout:
            return self._result(TIMEOUT)
        if self.all_solutions:
            if not self.found:
                return self._result(INFEASIBLE)
            return self._result(OPTIMAL if self.objective is not None else FEASIBLE)
        if self.incumbent is None:
            return self._result(INFEASIBLE)
        return self._result(OPTIMAL if self.objective is not None else FEASIBLE)

    def _order_setup(self) -> None:
        st = self.store
        # constraints per variable (ties of the variable choice); derived propagators do not count
        rels = self.rels
        self.degree = [sum(1 for c in w if not rels[c].derived) for w in self.watch]
        self.direction = [1] * self.n_user  # 1: smallest value first, -1: largest first
        if self.obj_node is not None and not self.all_solutions:
            pol: dict[int, int] = {}
            sign = 1 if self.objective.sense == "maximize" else -1
            try:
                _polarity(self.obj_node, sign, pol, st.L, st.H)
            except Empty:
                pol = {}
            for i, s in pol.items():
                if i < self.n_user and s > 0:
                    self.direction[i] = -1

    def _select(self):
        st = self.store
        L = st.L
        H = st.H
        V = st.V
        best = -1
        best_size = INF
        best_deg = -1
        C = st.C
        degree = self.degree
        for i in range(self.n_user):
            lo = L[i]
            hi = H[i]
            if lo == hi:
                continue
            vals = V[i]
            if vals is None:
                size = hi - lo + 1 if C[i] is None else (hi - lo) // C[i][0] + 1
            else:
                size = bisect_right(vals, hi) - bisect_left(vals, lo)
            if size < best_size or (size == best_size and degree[i] > best_deg):
                best = i
                best_size = size
                best_deg = degree[i]
        return best, best_size

    def _branches(self, i: int, size: int) -> list[tuple[int, int]]:
        st = self.store
        lo = st.L[i]
        hi = st.H[i]
        vals = st.V[i]
        if size <= ENUMERATE_LIMIT:
            if vals is None:
                seq = range(lo, hi + 1, 1 if st.C[i] is None else st.C[i][0])
            else:
                seq = vals[bisect_left(vals, lo) : bisect_right(vals, hi)]
            out = [(v, v) for v in seq]
        elif vals is None:
            mid = (lo + hi) // 2
            out = [(lo, mid), (mid + 1, hi)]
        else:
            a = bisect_left(vals, lo)
            b = bisect_right(vals, hi)
            m = (a + b) // 2
            out = [(vals[a], vals[m - 1]), (vals[m], vals[b - 1])]
        if self.direction[i] < 0:
            out.reverse()
        return out

    def _search(self) -> None:
        st = self.store
        var_nodes = self.comp.var_nodes
        watch = self.watch
        stats = self.stats
        bound_id = len(self.rels) - 1 if self.bound_rel is not None else None
        deadline = self.deadline
        frames: list[list] = []
        expand = True
        while True:
            if expand:
                i, size = self._select()
                if i < 0:
                    if self._leaf():
                        return
                else:
                    frames.append([self.snapshot(), i, self._branches(i, size), 0])
            # Next untried branch, depth first.
            expand = False
            while frames:
                frame = frames[-1]
                branches = frame[2]
                k = frame[3]
                if k == len(branches):
                    frames.pop()
                    continue
                frame[3] = k + 1
                self.restore(frame[0])
                stats.nodes += 1
                if deadline is not None and (stats.nodes & 15) == 0 and time.perf_counter() > deadline:
                    raise _Timeout
                i = frame[1]
                lo, hi = branches[k]
                st.changed.clear()
                if not var_nodes[i].bwd(lo, hi):
                    stats.failures += 1
                    continue
                start = watch[i] if bound_id is None else watch[i] + [bound_id]
                if self.propagate(start):
                    expand = True
                    break
                stats.failures += 1
            if not expand:
                return

    def _compile_checks(self) -> None:
        index = self.comp.index
        model = self.model
        self.checks = [compile_check(c, index) for c in model.constraints]
        if self.objective is not None:
            self.obj_eval = compile_expr(self.objective.expr, index, {})
        for i, name in enumerate(self.names):
            d = model.domain(name)
            self.domain_checks.append((i, d.lo, d.hi, None if d.values is None else frozenset(d.values)))

    def _leaf(self) -> bool:
        """Check a full assignment; returns True when the search should stop."""
        if self.checks is None:
            self._compile_checks()
        L = self.store.L
        values = L[: self.n_user]
        for i, lo, hi, allowed in self.domain_checks:
            v = values[i]
            if v < lo or (hi is not None and v > hi) or (allowed is not None and v not in allowed):
                self.stats.failures += 1
                return False
        for check in self.checks:
            if not check(values):
                self.stats.failures += 1
                return False
        value = None
        if self.obj_eval is not None:
            try:
                value = self.obj_eval(values, ())
            except ZeroDivisionError:
                self.stats.failures += 1
                return False
        self.stats.solutions += 1
        if self.all_solutions:
            self.found.append((value, values))
            return False
        if self.objective is None:
            self.incumbent = values
            return True
        maximize = self.objective.sense == "maximize"
        best = self.incumbent_value
        if best is None or (value > best if maximize else value < best):
            self.incumbent = values
            self.incumbent_value = value
            # Branch and bound: from now on only strictly better solutions.
            self.bound_rel.c = -(value + 1) if maximize else value - 1
        return False

    def _result(self, status: str) -> Result:
        self.stats.time = time.perf_counter() - self.t0
        names = self.names
        result = Result(status, stats=self.stats)
        if self.all_solutions:
            found = self.found
            if self.objective is not None:
                sign = -1 if self.objective.sense == "maximize" else 1
                found = sorted(found, key=lambda t: (sign * t[0], t[1]))
            else:
                found = sorted(found, key=lambda t: t[1])
            result.solutions = [dict(zip(names, vals)) for _, vals in found]
            if found:
                result.solution = result.solutions[0]
                result.objective = found[0][0]
            if status == INFEASIBLE and found:
                result.status = FEASIBLE
        elif self.incumbent is not None:
            result.solution = dict(zip(names, self.incumbent))
            result.objective = self.incumbent_value
        return result


def solve(
    problem: str | Model,
    objective: str | Objective | tuple[str, Expr | int] | None = None,
    all_solutions: bool = False,
    timeout: float | None = None,
) -> Result:
    """Solve a problem given as text (see docs/solver.md) or as a Model.

    ``objective`` overrides the problem's own: ``"maximize EXPR"``, an
    Objective, or ``("minimize", expr)``.  ``all_solutions`` enumerates every
    solution (sorted best first under an objective, else lexicographically).
    ``timeout`` is in seconds.  Raises ParseError / ModelError for malformed or
    unbounded problems.
    """
    from .parser import parse_objective

    t0 = time.perf_counter()
    if isinstance(problem, str):
        model = Model.from_text(problem)
    elif isinstance(problem, Model):
        model = problem
    else:
        raise TypeError("problem must be a str or a Model")
    obj = model.objective
    if objective is not None:
        if isinstance(problem, Model):
            model = model.copy()
        if isinstance(objective, Objective):
            obj = objective
        elif isinstance(objective, str):
            obj = parse_objective(model, objective)
        elif isinstance(objective, Sequence) and len(objective) == 2:
            obj = Objective(objective[0], objective[1])
        else:
            raise TypeError("objective must be 'maximize EXPR', 'minimize EXPR', an Objective or (sense, expr)")
    if timeout is not None:
        timeout = max(0.0, timeout - (time.perf_counter() - t0))
    # The solver allocates many short-lived tuples and lists and makes no garbage cycles worth
    # collecting mid-solve; in a process with torch loaded a full collection costs milliseconds.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return Solver(model, obj, all_solutions, timeout).run()
    finally:
        if collecting:
            gc.enable()


__all__ = ["Result", "Stats", "solve", "OPTIMAL", "FEASIBLE", "INFEASIBLE", "TIMEOUT", "EXPLICIT_LIMIT"]
