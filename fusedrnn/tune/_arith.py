"""Exact integer interval arithmetic with infinite end points.

Bounds are Python ints or the floats ``INF`` / ``NINF``.  Infinite bounds only
occur before the root propagation has proven every variable bounded, but the
helpers must stay sound for them (``0 * inf`` is 0, ``inf // 3`` is inf, ...).
Every function here over-approximates: it may keep impossible values, it never
drops a possible one.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from math import gcd, isqrt

INF = float("inf")
NINF = -INF

# Divisor lists are only built for numbers up to this size: trial division of
# larger numbers would cost more than the pruning is worth.
DIVISOR_LIMIT = 1 << 40


class Empty(Exception):
    """A sub-expression has no defined value (every divisor is zero)."""


def mul(a, b):
    """Product of two bounds where 0 * inf is 0 (the limit is attained at 0)."""
    if a == 0 or b == 0:
        return 0
    return a * b


def imul(al, ah, bl, bh):
    """Interval product."""
    if al >= 0 and bl >= 0:
        return mul(al, bl), mul(ah, bh)
    p1 = mul(al, bl)
    p2 = mul(al, bh)
    p3 = mul(ah, bl)
    p4 = mul(ah, bh)
    return min(p1, p2, p3, p4), max(p1, p2, p3, p4)


def cdiv(a, b):
    """Lower bound on ceil(a / y) over 0 < y <= b (b may be INF)."""
    if a == INF or a == NINF:
        return a
    if b == INF:
        # a / y tends to 0 from the side of a's sign; for a > 0 the quotient is
        # positive, so an integer above it is at least 1.
        return 1 if a > 0 else 0
    return -((-a) // b)


def fdiv(a, b):
    """Upper bound on floor(a / y) over y >= b > 0 (b may be INF)."""
    if a == INF or a == NINF:
        return a
    if b == INF:
        return 0 if a >= 0 else -1
    return a // b


def quotient(zl, zh, yl, yh):
    """Bounds on x given x * y in [zl, zh] and y in [yl, yh], or None (no info)."""
    if yl > 0:
        xl = cdiv(zl, yh) if zl >= 0 else cdiv(zl, yl)
        xh = fdiv(zh, yl) if zh >= 0 else fdiv(zh, yh)
        return xl, xh
    if yh < 0:
        r = quotient(-zh, -zl, -yh, -yl)
        return None if r is None else (r[0], r[1])
    # y's interval contains 0.  If z cannot be 0, y != 0, so split y by sign.
    if zl > 0 or zh < 0:
        lo = INF
        hi = NINF
        if yh >= 1:
            p = quotient(zl, zh, 1, yh)
            lo, hi = min(lo, p[0]), max(hi, p[1])
        if yl <= -1:
            p = quotient(zl, zh, yl, -1)
            lo, hi = min(lo, p[0]), max(hi, p[1])
        if lo > hi:
            raise Empty
        return lo, hi
    return None


def _floor_quot(a, b):
    """floor(a / b) as a limit, b != 0; a or b may be infinite."""
    if b == INF or b == NINF:
        if a == INF or a == NINF:
            return None
        if b > 0:
            return 0 if a >= 0 else -1
        return 0 if a <= 0 else -1
    if a == INF or a == NINF:
        return a if b > 0 else -a
    return a // b


def ifloordiv(al, ah, bl, bh):
    """Interval of a // b (Python floor division), zero divisors excluded."""
    parts = []
    if bh >= 1:
        parts.append((max(bl, 1), bh))
    if bl <= -1:
        parts.append((bl, min(bh, -1)))
    if not parts:
        raise Empty
    lo = INF
    hi = NINF
    for ql, qh in parts:
        for a in (al, ah):
            for b in (ql, qh):
                v = _floor_quot(a, b)
                if v is None:
                    return NINF, INF
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
    return lo, hi


def imod(al, ah, bl, bh):
    """Interval of a % b (Python semantics: the result has the sign of b)."""
    if al == ah and bl == bh:
        if bl == 0:
            raise Empty
        if al == INF or al == NINF or bl == INF or bl == NINF:
            return (0, bh - 1) if bl > 0 else (bl + 1, 0)
        v = al % bl
        return v, v
    if bl >= 1:
        if al >= 0:
            if ah < bl:
                return al, ah
            return 0, min(ah, bh - 1)
        return 0, bh - 1
    if bh <= -1:
        if ah <= 0:
            if al > bh:
                return al, ah
            return max(al, bl + 1), 0
        return bl + 1, 0
    if bl == 0 and bh == 0:
        raise Empty
    return (bl + 1 if bl < 0 else 0), (bh - 1 if bh > 0 else 0)


def _pw(x, k):
    return x**k


def ipow(l, h, k):
    """Interval of x ** k for an integer k >= 0."""
    if k == 0:
        return 1, 1
    if k & 1 or l >= 0:
        return _pw(l, k), _pw(h, k)
    if h <= 0:
        return _pw(h, k), _pw(l, k)
    return 0, max(_pw(l, k), _pw(h, k))


def root_floor(n, k):
    """floor(n ** (1/k)) for n >= 0 (n may be INF), exactly."""
    if n == INF:
        return INF
    if n < 2:
        return n
    if k == 1:
        return n
    if k == 2:
        return isqrt(n)
    if n.bit_length() < 1000:
        r = int(round(n ** (1.0 / k)))
    else:
        r = 1 << (n.bit_length() // k)
    while r > 0 and r**k > n:
        r -= 1
    while (r + 1) ** k <= n:
        r += 1
    return r


def root_ceil(n, k):
    """ceil(n ** (1/k)) for n >= 0 (n may be INF), exactly."""
    r = root_floor(n, k)
    if r == INF or r**k == n:
        return r
    return r + 1


def pow_base_bounds(zl, zh, k, xl, xh):
    """Bounds on x given x ** k in [zl, zh] and x in [xl, xh]; None for no info."""
    if k == 0:
        return None
    if k & 1:
        lo = root_ceil(zl, k) if zl >= 0 else -root_floor(-zl, k)
        hi = root_floor(zh, k) if zh >= 0 else -root_ceil(-zh, k)
        return lo, hi
    if zh < 0:
        raise Empty
    r = root_floor(zh, k)
    lo, hi = -r, r
    if zl > 0:
        s = root_ceil(zl, k)
        if xl > -s:
            lo = s
        elif xh < s:
            hi = -s
    return lo, hi


_divisor_cache: dict[int, tuple[int, ...] | None] = {}


def divisors(n: int) -> tuple[int, ...] | None:
    """Sorted positive divisors of n >= 1, or None when n is too large to factor."""
    got = _divisor_cache.get(n)
    if got is not None or n in _divisor_cache:
        return got
    if n > DIVISOR_LIMIT:
        _divisor_cache[n] = None
        return None
    factors: list[tuple[int, int]] = []
    m = n
    p = 2
    while p * p <= m:
        if m % p == 0:
            e = 0
            while m % p == 0:
                m //= p
                e += 1
            factors.append((p, e))
        p += 1 if p == 2 else 2
    if m > 1:
        factors.append((m, 1))
    divs = [1]
    for p, e in factors:
        divs = [d * p**j for d in divs for j in range(e + 1)]
    result = tuple(sorted(divs))
    if len(_divisor_cache) > 4096:
        _divisor_cache.clear()
    _divisor_cache[n] = result
    return result


def count_in(vals: tuple[int, ...], lo, hi) -> int:
    """Number of values of a sorted tuple inside [lo, hi]."""
    return bisect_right(vals, hi) - bisect_left(vals, lo)


# Congruences.  A pair (m, r) says "the value is r modulo m" with m >= 0 and 0 <= r < m; m == 1 says
# nothing and m == 0 means the value is exactly r.  Sums and products of congruences are congruences
# (Granger's congruence arithmetic), so the gcd of a sum's coefficients, the residues of fixed factors
# and the congruences of the variables combine into one class per expression.


def cong_add(a, b):
    """The class of x + y for x in class a, y in class b."""
    m = gcd(a[0], b[0])
    r = a[1] + b[1]
    return (m, r % m if m else r)


def cong_scale(a, k: int):
    """The class of k * x for x in class a."""
    m = abs(k) * a[0]
    r = k * a[1]
    return (m, r % m if m else r)


def cong_mul(a, b):
    """The class of x * y: (m1 Z + r1)(m2 Z + r2) lies in gcd(m1 m2, m1 r2, m2 r1) Z + r1 r2."""
    m = gcd(a[0] * b[0], a[0] * b[1], b[0] * a[1])
    r = a[1] * b[1]
    return (m, r % m if m else r)


def cong_pow(a, e: int):
    """The class of x ** e (e >= 0), by repeated squaring."""
    result = (0, 1)
    base = a
    while e:
        if e & 1:
            result = cong_mul(result, base)
        e >>= 1
        if e:
            base = cong_mul(base, base)
    return result


def solve_linear_cong(a: int, b: int, m: int):
    """The solutions x of a * x == b (mod m), m >= 1, as a class (m', r'); None when there is none."""
    g = gcd(a, m)
    if b % g:
        return None
    m2 = m // g
    if m2 == 1:
        return (1, 0)
    return (m2, (b // g) * pow(a // g, -1, m2) % m2)


def crt(a, b):
    """The intersection of two classes (m >= 1), or None when it is empty."""
    (m1, r1), (m2, r2) = a, b
    g = gcd(m1, m2)
    if (r2 - r1) % g:
        return None
    lcm = m1 // g * m2
    if m2 // g == 1:
        return (m1, r1 % m1)
    t = (r2 - r1) // g * pow(m1 // g, -1, m2 // g) % (m2 // g)
    return (lcm, (r1 + m1 * t) % lcm)


# Residue sets modulo a small m as bit masks (bit r set: residue r is possible).


def full_mask(m: int) -> int:
    return (1 << m) - 1


# The same few masks recur in every revision: results are cached (bounded; cleared when full).
_mask_cache: dict = {}
MASK_CACHE_LIMIT = 1 << 16


def _cached(key, compute):
    got = _mask_cache.get(key)
    if got is None:
        if len(_mask_cache) >= MASK_CACHE_LIMIT:
            _mask_cache.clear()
        got = _mask_cache[key] = compute()
    return got


def mask_add(a: int, b: int, m: int) -> int:
    """{x + y mod m : x in a, y in b}."""
    if a > b:
        a, b = b, a
    return _cached(("+", a, b, m), lambda: _mask_add(a, b, m))


def mask_scale(a: int, k: int, m: int) -> int:
    """{k * x mod m : x in a} (k = -1: the negatives)."""
    return _cached(("*", a, k % m, m), lambda: mask_map(a, m, (k % m).__mul__))


def mask_pow(a: int, e: int, m: int) -> int:
    """{x ** e mod m : x in a}."""
    return _cached(("^", a, e, m), lambda: mask_map(a, m, lambda x: pow(x, e, m)))


def _mask_add(a: int, b: int, m: int) -> int:
    full = (1 << m) - 1
    out = 0
    while a:
        low = a & -a
        r = low.bit_length() - 1
        a ^= low
        out |= ((b << r) | (b >> (m - r))) & full
        if out == full:
            break
    return out


def mask_map(a: int, m: int, f) -> int:
    """{f(x) mod m : x in a}."""
    out = 0
    while a:
        low = a & -a
        a ^= low
        out |= 1 << (f(low.bit_length() - 1) % m)
    return out


def mask_mul(a: int, b: int, m: int) -> int:
    """{x * y mod m : x in a, y in b}."""
    if a > b:
        a, b = b, a
    return _cached(("x", a, b, m), lambda: _mask_mul(a, b, m))


def _mask_mul(a: int, b: int, m: int) -> int:
    full = (1 << m) - 1
    out = 0
    while a:
        low = a & -a
        x = low.bit_length() - 1
        a ^= low
        out |= mask_map(b, m, x.__mul__)
        if out == full:
            break
    return out


def mask_preimage_scale(allowed: int, k: int, m: int) -> int:
    """{x mod m : k * x mod m in allowed}."""
    return _cached(("/", allowed, k % m, m), lambda: mask_preimage(allowed, m, (k % m).__mul__))


def mask_preimage_pow(allowed: int, e: int, m: int) -> int:
    """{x mod m : x ** e mod m in allowed}."""
    return _cached(("v", allowed, e, m), lambda: mask_preimage(allowed, m, lambda x: pow(x, e, m)))


def mask_preimage(allowed: int, m: int, f) -> int:
    """{x mod m : f(x) mod m in allowed}."""
    out = 0
    for x in range(m):
        if allowed >> (f(x) % m) & 1:
            out |= 1 << x
    return out


def mask_of_range(lo: int, hi: int, step: int, m: int) -> int:
    """Residues mod m of lo, lo + step, ..., <= hi (finite bounds)."""
    g = gcd(step, m)
    if (hi - lo) // step + 1 >= m // g:
        # A whole period: every residue of lo's class modulo gcd(step, m).
        out = 0
        for r in range(lo % g, m, g):
            out |= 1 << r
        return out
    out = 0
    for v in range(lo, hi + 1, step):
        out |= 1 << (v % m)
    return out
