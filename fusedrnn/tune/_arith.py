"""Exact integer interval arithmetic with infinite end points.

Bounds are Python ints or the floats ``INF`` / ``NINF``.  Infinite bounds only
occur before the root propagation has proven every variable bounded, but the
helpers must stay sound for them (``0 * inf`` is 0, ``inf // 3`` is inf, ...).
Every function here over-approximates: it may keep impossible values, it never
drops a possible one.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from math import isqrt

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
