"""Number-theoretic rules of fusedrnn.tune: congruences, residue masks, strict divisors.

Each rule has a unit test that shows it firing (at the root, before any branching) and the answer it
proves; a seeded random property test checks three problem classes against brute force on small
domains (the full solution set), and their wide-domain versions (values up to 2^40) for an answer
within a second.
"""

from __future__ import annotations

import itertools
import random
import time

import pytest

from fusedrnn.tune import Model, _nodes, solve
from fusedrnn.tune.solver import Solver

BIG = 1 << 40


def root_domains(text: str) -> dict[str, tuple]:
    """Variable -> (lo, hi, congruence class or None) after root propagation."""
    model = Model.from_text(text)
    solver = Solver(model, None, False, None)
    assert solver.root(), "root propagation failed"
    st = solver.store
    return {name: (st.L[i], st.H[i], st.C[i]) for i, name in enumerate(solver.names)}


def settled_at_root(text: str, status: str) -> None:
    """The problem's answer is ``status``; an infeasible one proven before any branching."""
    r = solve(text, timeout=10)
    assert r.status == status
    if status == "infeasible":
        assert r.stats.nodes == 0


# --- linear and polynomial congruences -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # terms all even, target odd (products and powers included)
        f"e <= {BIG}; f <= {BIG}; g <= {BIG}; 2 * e * f + 4 * g == 7",
        f"i <= {BIG}; j <= {BIG}; k <= {BIG}; 2 * i ^ 2 + 6 * j == 2 * k + 1",
        # multiples of 3 against 3k + 2
        f"a <= {BIG}; b <= {BIG}; c <= {BIG}; 3 * a * b + 6 * b ^ 2 == 3 * c + 2",
        # x is 3 mod 4 from x % 4 == 3; 2 * y is even
        f"x <= {BIG}; y <= {BIG}; x % 4 == 3; x == 2 * y",
        # divisibility links carry classes: 6 | x and 10 | y, so x + y is even
        f"x <= {BIG}; y <= {BIG}; x % 6 == 0; y % 10 == 0; x + y == 2 * z + 1; z <= {BIG}",
    ],
)
def test_congruence_proves_infeasible_at_root(text):
    settled_at_root(text, "infeasible")


def test_congruence_classes_of_variables():
    # 4 * a + 6 * b == z: z is even; x % 7 == 0 gives x the class 0 mod 7 over a range too wide to list
    d = root_domains(f"a <= {BIG}; b <= {BIG}; z <= {BIG}; 4 * a + 6 * b == z; x % 7 == 0; x <= {BIG}")
    assert d["z"][2] == (2, 0) and d["z"][0] == 10
    assert d["x"][2] == (7, 0) and d["x"][0] == 7 and d["x"][1] % 7 == 0
    # a class that comes from the rest of a sum: 5 * u + 3 == 10 * v (mod 10 -> u is odd)
    d = root_domains(f"u <= {BIG}; v <= {BIG}; 5 * u + 5 == 10 * v")
    assert d["u"][2] == (2, 1)


def test_congruence_solution_respects_classes():
    r = solve(f"x <= {BIG}; y <= {BIG}; x % 4 == 3; 3 * x == 2 * y + 1; x >= 100")
    assert r.status == "feasible"
    x, y = r.solution["x"], r.solution["y"]
    assert x % 4 == 3 and 3 * x == 2 * y + 1 and x >= 100


# --- residue masks: squares and sums of squares ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # a sum of two squares is never 3 mod 4
        f"a <= {BIG}; b <= {BIG}; k <= {BIG}; a ^ 2 + b ^ 2 == 4 * k + 3",
        # ... nor of three squares 7 mod 8
        f"x <= {BIG}; y <= {BIG}; z <= {BIG}; w <= {BIG}; x ^ 2 + y ^ 2 + z ^ 2 == 8 * w + 7",
        # two odd squares add up to 2 mod 4, which is no square
        f"a <= {BIG}; b <= {BIG}; c <= {BIG}; a ^ 2 + b ^ 2 == c ^ 2; a % 2 == 1; b % 2 == 1",
        # squares are 0 or 1 mod 3
        f"a <= {BIG}; b <= {BIG}; a ^ 2 == 3 * b + 2",
        # fourth powers are 0 or 1 mod 5 (and mod 16): a^4 + b^4 is 0, 1, 2 mod 5
        f"a <= {BIG}; b <= {BIG}; c <= {BIG}; a ^ 4 + b ^ 4 == 5 * c + 3",
    ],
)
def test_residue_masks_prove_infeasible_at_root(text):
    settled_at_root(text, "infeasible")


def test_residue_mask_narrows_to_a_class():
    # c^2 == a^2 + 4 b + 3 with a even: c^2 is 3 mod 4, impossible; with a odd, c^2 is 0 mod 4: c is even
    d = root_domains(f"a <= {BIG}; b <= {BIG}; c <= {BIG}; c ^ 2 == a ^ 2 + 4 * b + 3; a % 2 == 1")
    assert d["c"][2] is not None and d["c"][2][0] % 2 == 0 and d["c"][2][1] % 2 == 0
    settled_at_root(f"a <= {BIG}; b <= {BIG}; c <= {BIG}; c ^ 2 == a ^ 2 + 4 * b + 3; a % 2 == 0", "infeasible")
    # a^2 + b^2 == c^2 with 8 | c: squares modulo 64 leave a and b multiples of 8
    d = root_domains(f"a <= {BIG}; b <= {BIG}; c <= {BIG}; a ^ 2 + b ^ 2 == c ^ 2; c % 8 == 0")
    assert d["a"][2] == (8, 0) and d["b"][2] == (8, 0)


def test_difference_of_squares():
    # c^2 - a^2 == 3 bounds c by 2 and a by 1 at once (bounds alone creep down from 2^40)
    d = root_domains(f"a <= {BIG}; c <= {BIG}; c ^ 2 == a ^ 2 + 3")
    assert d["a"][:2] == (1, 1) and d["c"][:2] == (2, 2)
    # with a fixed, a Pythagorean triple's other sides are at most a^2 / 2 + 1
    d = root_domains(f"b <= {BIG}; c <= {BIG}; 20 ^ 2 + b ^ 2 == c ^ 2")
    assert d["b"][1] <= 199 and d["c"][1] <= 201
    r = solve(f"b <= {BIG}; c <= {BIG}; 20 ^ 2 + b ^ 2 == c ^ 2", all_solutions=True)
    assert sorted((s["b"], s["c"]) for s in r.solutions) == [(15, 25), (21, 29), (48, 52), (99, 101)]


def test_combined_equalities():
    # 2 c^2 == 8 s + 5 follows from the two: even against odd
    settled_at_root(
        f"a <= {BIG}; b <= {BIG}; c <= {BIG}; s <= {BIG}; a ^ 2 + b ^ 2 == c ^ 2; a ^ 2 + b ^ 2 + c ^ 2 == 8 * s + 5",
        "infeasible",
    )


def test_pythagorean_with_divisibility_links():
    r = solve(f"a <= {BIG}; b <= {BIG}; c <= {BIG}; a ^ 2 + b ^ 2 == c ^ 2; a % 3 == 0; b % 4 == 0")
    a, b, c = (r.solution[k] for k in "abc")
    assert r.status == "feasible" and a * a + b * b == c * c and a % 3 == 0 and b % 4 == 0


# --- strict divisors -------------------------------------------------------------------------


def chain(k: int, top: int, strict: str = "{lo} < {hi}", bottom: int = 1) -> str:
    rels = [f"x{i + 1} % x{i} == 0; " + strict.format(lo=f"x{i}", hi=f"x{i + 1}") for i in range(1, k)]
    return "; ".join(rels) + f"; x{k} <= {top}; x1 >= {bottom}"


@pytest.mark.parametrize("strict", ["{lo} < {hi}", "{lo} + 1 <= {hi}", "{hi} > {lo}", "{lo} != {hi}"])
def test_strict_divisor_chain_bound(strict):
    # k strict divisors need top >= 2^(k-1) * bottom
    settled_at_root(chain(41, BIG - 1, strict), "infeasible")
    r = solve(chain(41, BIG, strict))
    assert r.status == "feasible" and r.solution["x41"] == BIG
    settled_at_root(chain(6, 95, strict, bottom=3), "infeasible")
    assert solve(chain(6, 96, strict, bottom=3)).solution["x6"] == 96


def test_strict_divisor_rule_fires_on_root_bounds():
    # x % y == 0 and y < x give 2 * y <= x: y <= 50 from x <= 100
    assert root_domains("x <= 100; x % y == 0; y < x")["y"][1] == 50
    # through a chain of orderings: y < z < x
    assert root_domains("x <= 100; z <= 100; x % y == 0; y < z; z < x")["y"][1] == 50
    # the quotient rule on bounds alone: x in 60..100, y <= 59, so x >= 2 * y and y <= 50
    assert root_domains("x <= 100; x >= 60; y <= 59; x % y == 0")["y"][1] == 50


def test_sums_of_strict_divisors():
    # two different strict divisors add up to at most x / 2 + x / 3 < x
    settled_at_root(f"x <= {BIG}; x % a == 0; x % b == 0; a < b; b < x; a + b == x", "infeasible")
    # three can: 1 + 2 + 3 == 6
    r = solve(f"x <= {BIG}; x % a == 0; x % b == 0; x % c == 0; a < b; b < c; c < x; a + b + c == x")
    a, b, c, x = (r.solution[k] for k in "abcx")
    assert r.status == "feasible" and a + b + c == x and x % a == x % b == x % c == 0 and a < b < c < x
    # a lattice: y | x and z | x strictly, w | y and w | z strictly, side sum y + z <= x - 1
    r = solve(
        "x <= 60; x % y == 0; x % z == 0; y % w == 0; z % w == 0; w < y; w < z; y < z; z < x; y + z + 1 <= x; w >= 2",
        all_solutions=True,
    )
    brute = [
        (x, y, z, w)
        for x in range(1, 61)
        for y in range(1, x)
        for z in range(y + 1, x)
        for w in range(2, y)
        if x % y == 0 and x % z == 0 and y % w == 0 and z % w == 0 and y + z + 1 <= x
    ]
    got = sorted((s["x"], s["y"], s["z"], s["w"]) for s in r.solutions)
    assert got == sorted(brute)


def test_strict_divisor_rule_needs_positive_operands():
    # builder variables may be zero or negative: the divisor rules assume positive operands and skip
    # these; the answer must still be exactly the enumerated one
    m = Model()
    x, y = m.var("x", -8, 8), m.var("y", -8, 8)
    m.add(x % y == 0, y < x)
    got = sorted((s["x"], s["y"]) for s in m.solve(all_solutions=True).solutions)
    assert got == sorted((a, b) for a in range(-8, 9) for b in range(-8, 9) if b != 0 and a % b == 0 and b < a)


# --- timeouts are never proofs ----------------------------------------------------------------


def test_timeout_is_not_infeasible():
    # hard for propagation: a^2 + b^2 == 3 c^2 has no positive solution (descent), but no rule here
    # proves it; with a short limit the status says timeout, not infeasible
    text = f"a <= {BIG}; b <= {BIG}; c <= {BIG}; a ^ 2 + b ^ 2 == 3 * c ^ 2"
    for limit in (0.0, 1e-4, 1e-3, 0.005, 0.02, 0.2):  # out of time at the root, after it, in the search
        r = solve(text, timeout=limit)
        assert r.status == "timeout" and r.solution is None, limit
    # and a feasible problem whose search is cut short: timeout, with or without a solution so far
    r = solve(f"x <= {BIG}; y <= {BIG}; x * y == 2 * z + 1; z <= {BIG}; # objective: maximize x\n", timeout=0.05)
    assert r.status == "timeout"


# --- seeded random problems against brute force -----------------------------------------------


def evaluate(text: str, names: list[str], box: int):
    """All solutions of a problem written in the common subset of Python and the text syntax (** for
    powers, % with parenthesised operands, no lists or alternatives), by enumeration over 1..box."""
    checks = [compile(c.strip(), "<c>", "eval") for c in text.split(";") if c.strip()]
    out = []
    for values in itertools.product(range(1, box + 1), repeat=len(names)):
        env = dict(zip(names, values))
        try:
            if all(eval(c, {}, env) for c in checks):
                out.append(values)
        except ZeroDivisionError:
            pass
    return out


def congruence_problem(rng: random.Random, box: int, wide: bool = False):
    """Random coefficient set with a common factor g equal to a target on or off g's residues: a
    constant, or k w + c with a variable w of its own (``wide``: only off g's residues, a multiple of g
    plus a non-multiple: over wide ranges a search for a solution of k w + c is not this rule's work)."""
    names = ["x", "y", "z"][: rng.randint(2, 3)]
    g = rng.choice([2, 3, 4, 5, 6])
    forms = ["{v}", "{v} * {w}", "{v} ** 2", "{v} ** 3", "{v} * {w} ** 2"]
    terms = []
    for _ in range(rng.randint(1, 3)):
        v, w = rng.choice(names), rng.choice(names)
        terms.append(f"{g * rng.randint(1, 3)} * " + rng.choice(forms).format(v=v, w=w))
    lhs = " + ".join(terms)
    t = g * rng.randint(1, 4 * box) + rng.choice([0, 0, rng.randint(1, g - 1)])
    if rng.random() < 0.5:
        names.append("w")
        if wide:
            rhs = f"{g * rng.randint(1, 2)} * w + {rng.randint(1, g - 1)}"
        else:
            rhs = f"{rng.randint(1, 2 * g)} * w + {t % 7}"
    else:
        rhs = str(t)
    cons = [f"{lhs} == {rhs}"]
    if rng.random() < 0.5:
        v = rng.choice(names)
        cons.append(f"({v}) % ({rng.randint(2, 4)}) == {rng.randint(0, 1)}")
    return names, cons


def divisor_problem(rng: random.Random, box: int, wide: bool = False):
    """Random strict divisor chains and lattices, with side sums."""
    n = rng.randint(2, 4)
    names = [f"d{i}" for i in range(n)]
    cons = []
    for j in range(1, n):
        for i in rng.sample(range(j), rng.randint(1, j)):
            cons.append(f"({names[j]}) % ({names[i]}) == 0")
            cons.append(
                rng.choice(["{a} < {b}", "{a} + 1 <= {b}", "{b} > {a}", "{a} != {b}"]).format(a=names[i], b=names[j])
            )
    if n >= 3 and rng.random() < 0.7:
        k = rng.randint(2, n - 1)
        parts = rng.sample(names[:-1], k)
        cons.append(
            f"{' + '.join(parts)} {rng.choice(['==', '<=', '>=', '!='])} {names[-1]}" + rng.choice(["", " + 1", " - 1"])
        )
    return names, cons


def pythagorean_problem(rng: random.Random, box: int, wide: bool = False):
    """Random sums of squares equal to a multiple of a square (k = 1, 2, 5: each has solutions), with
    residue and divisibility links to fixed moduli, and a sum of three squares in a residue class."""
    names = ["a", "b", "c"]
    k = rng.choice([1, 1, 2, 5])
    cons = [f"a ** 2 + b ** 2 == {k} * c ** 2" if k > 1 else "a ** 2 + b ** 2 == c ** 2"]
    for _ in range(rng.randint(0, 2)):
        v = rng.choice(names)
        m = rng.choice([2, 3, 4, 5, 8])
        if rng.random() < 0.5:
            cons.append(f"({v}) % ({m}) == {rng.randint(0, m - 1)}")
        else:
            cons.append(f"({v}) % ({m}) == 0")
    if rng.random() < 0.3:
        names.append("s")
        cons.append(f"a ** 2 + b ** 2 + c ** 2 == {rng.choice([4, 8])} * s + {rng.randint(0, 7)}")
    return names, cons


CLASSES = {"congruence": congruence_problem, "divisor": divisor_problem, "pythagorean": pythagorean_problem}


@pytest.mark.parametrize("cls", sorted(CLASSES))
@pytest.mark.parametrize("cong_min_range", [0, None], ids=["rules-always", "rules-default"])
def test_random_problems_match_brute_force(cls, cong_min_range, monkeypatch):
    # The congruence rules only run on wide ranges by default; 0 makes them run on these small domains
    # too, so that brute force checks their soundness.
    if cong_min_range is not None:
        monkeypatch.setattr(_nodes, "CONG_MIN_RANGE", cong_min_range)
    rng = random.Random(f"tune-number-{cls}")
    box = 12
    for _ in range(60):
        names, cons = CLASSES[cls](rng, box)
        bounded = cons + [f"{v} <= {box}" for v in names]
        text = "; ".join(bounded)
        expected = evaluate(text, names, box)
        r = solve(text, all_solutions=True)
        got = sorted(tuple(s[v] for v in names) for s in r.solutions)
        assert r.status == ("feasible" if expected else "infeasible"), text
        assert got == sorted(expected), text


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_random_wide_problems_answer_within_a_second(cls):
    # The same classes over 1..2^40: an answer (never "timeout") within a second each; a solution is
    # checked exactly, and "infeasible" is cross-checked where a small witness would exist.
    rng = random.Random(f"tune-number-wide-{cls}")
    answered = {"feasible": 0, "infeasible": 0}
    for _ in range(40):
        names, cons = CLASSES[cls](rng, 12, wide=True)
        text = "; ".join(cons + [f"{v} <= {BIG}" for v in names])
        t0 = time.perf_counter()
        r = solve(text, timeout=5)
        elapsed = time.perf_counter() - t0
        assert r.status != "timeout" and elapsed < 1.0, (text, r.status, elapsed)
        answered[r.status] += 1
        if r.solution is not None:
            assert not Model.from_text(text).check(r.solution), text
        else:
            assert not evaluate("; ".join(cons + [f"{v} <= 12" for v in names]), names, 12), text
    assert answered["feasible"] and answered["infeasible"], answered
