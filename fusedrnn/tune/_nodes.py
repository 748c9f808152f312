"""Compiled expression nodes and relation propagators.

Every variable (user variables and one hidden variable per list literal) has a
domain stored in three shared lists: ``L[i]``/``H[i]`` are the bounds and
``V[i]`` is either None (every integer in ``L[i]..H[i]``) or a sorted tuple of
allowed values (the domain is the part of the tuple inside ``L[i]..H[i]``; the
bounds are always members of the tuple).  Big ranges therefore stay intervals
and only small or structured domains (divisors, multiples, lists) are explicit.

Expression nodes implement HC4-style revision: ``fwd()`` computes an interval
enclosure of the node's value from its children (and caches what ``bwd`` needs),
``bwd(tl, th)`` narrows the children so that the value can lie in ``[tl, th]``.
``div(c)`` tells a node that its value must divide ``c`` (factor reasoning) and
``mult(b)`` that it must be a multiple of ``b``.  All methods return False when
they prove that no value is left; ``Empty`` is raised when a sub-expression has
no defined value at all (every divisor is zero).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from ._arith import (
    DIVISOR_LIMIT,
    INF,
    NINF,
    Empty,
    cdiv,
    divisors,
    fdiv,
    ifloordiv,
    imod,
    imul,
    ipow,
    pow_base_bounds,
    quotient,
)

# Interval domains are turned into explicit value tuples (for multiples / holes)
# only up to this many values.
EXPLICIT_LIMIT = 4096


class Store:
    """Domains of all variables plus the list of variables changed by the last revision."""

    __slots__ = ("L", "H", "V", "changed")

    def __init__(self) -> None:
        self.L: list = []
        self.H: list = []
        self.V: list = []
        self.changed: list[int] = []


class Node:
    __slots__ = ()

    def fwd(self):
        raise NotImplementedError

    def bwd(self, tl, th) -> bool:
        return True

    def div(self, c: int) -> bool:
        return True

    def mult(self, b: int) -> bool:
        return True

    def var_indices(self) -> set[int]:
        return set()


class CConst(Node):
    __slots__ = ("c",)

    def __init__(self, c: int):
        self.c = c

    def fwd(self):
        return self.c, self.c

    def bwd(self, tl, th) -> bool:
        return tl <= self.c <= th

    def div(self, c: int) -> bool:
        return self.c != 0 and c % self.c == 0

    def mult(self, b: int) -> bool:
        return self.c % b == 0


class CVar(Node):
    __slots__ = ("i", "L", "H", "V", "ch")

    def __init__(self, i: int, store: Store):
        self.i = i
        self.L = store.L
        self.H = store.H
        self.V = store.V
        self.ch = store.changed

    def var_indices(self) -> set[int]:
        return {self.i}

    def fwd(self):
        i = self.i
        return self.L[i], self.H[i]

    def bwd(self, tl, th) -> bool:
        i = self.i
        L = self.L
        H = self.H
        l0 = L[i]
        h0 = H[i]
        if tl <= l0 and th >= h0:
            return True
        lo = tl if tl > l0 else l0
        hi = th if th < h0 else h0
        if lo > hi:
            return False
        vals = self.V[i]
        if vals is not None:
            # Snap the new bounds to allowed values.
            if lo != l0:
                lo = vals[bisect_left(vals, lo)]
            if hi != h0:
                hi = vals[bisect_right(vals, hi) - 1]
            if lo > hi:
                return False
        L[i] = lo
        H[i] = hi
        self.ch.append(i)
        return True

    def _set_values(self, new: tuple) -> bool:
        if not new:
            return False
        i = self.i
        self.V[i] = new
        self.L[i] = new[0]
        self.H[i] = new[-1]
        self.ch.append(i)
        return True

    def div(self, c: int) -> bool:
        i = self.i
        lo = self.L[i]
        hi = self.H[i]
        if lo < 1:
            return True  # signed divisors: not worth it for positive-by-default variables
        if lo == hi:
            return c % lo == 0
        vals = self.V[i]
        if vals is None:
            ds = divisors(c)
            if ds is None:
                return self.bwd(lo, c)
            new = ds[bisect_left(ds, lo) : bisect_right(ds, hi)]
        else:
            a = bisect_left(vals, lo)
            b = bisect_right(vals, hi)
            new = tuple([v for v in vals[a:b] if c % v == 0])
            if len(new) == b - a:
                return True
        return self._set_values(new)

    def mult(self, b: int) -> bool:
        i = self.i
        lo = self.L[i]
        hi = self.H[i]
        vals = self.V[i]
        if vals is None:
            nl = cdiv(lo, b) * b
            nh = fdiv(hi, b) * b
            if nl > nh:
                return False
            if nh != INF and (nh - nl) // b < EXPLICIT_LIMIT:
                if nl == nh:
                    return self.bwd(nl, nh)
                return self._set_values(tuple(range(nl, nh + 1, b)))
            return self.bwd(nl, nh)
        a = bisect_left(vals, lo)
        e = bisect_right(vals, hi)
        new = tuple([v for v in vals[a:e] if v % b == 0])
        if len(new) == e - a:
            return True
        return self._set_values(new)

    def remove(self, v: int) -> bool:
        """Remove one value from the domain."""
        i = self.i
        lo = self.L[i]
        hi = self.H[i]
        if v == lo:
            return self.bwd(lo + 1, hi)
        if v == hi:
            return self.bwd(lo, hi - 1)
        if v < lo or v > hi:
            return True
        vals = self.V[i]
        if vals is None:
            if hi - lo >= EXPLICIT_LIMIT:
                return True
            return self._set_values(tuple([x for x in range(lo, hi + 1) if x != v]))
        a = bisect_left(vals, lo)
        e = bisect_right(vals, hi)
        k = bisect_left(vals, v)
        if k >= len(vals) or vals[k] != v:
            return True
        return self._set_values(vals[a:k] + vals[k + 1 : e])

    def size(self) -> int:
        i = self.i
        vals = self.V[i]
        if vals is None:
            return self.H[i] - self.L[i] + 1
        return bisect_right(vals, self.H[i]) - bisect_left(vals, self.L[i])

    def values_in_range(self) -> tuple | None:
        i = self.i
        vals = self.V[i]
        if vals is None:
            return None
        return vals[bisect_left(vals, self.L[i]) : bisect_right(vals, self.H[i])]


class CSum(Node):
    """``const + sum(coef_k * node_k)`` with integer coefficients."""

    __slots__ = ("const", "coefs", "nodes", "cl", "chi", "l", "h")

    def __init__(self, const: int, coefs: list[int], nodes: list[Node]):
        self.const = const
        self.coefs = coefs
        self.nodes = nodes
        self.cl = [0] * len(nodes)
        self.chi = [0] * len(nodes)
        self.l = self.h = 0

    def var_indices(self) -> set[int]:
        return set().union(*(n.var_indices() for n in self.nodes))

    def fwd(self):
        lo = hi = self.const
        cl = self.cl
        chi = self.chi
        k = 0
        for a, node in zip(self.coefs, self.nodes):
            nl, nh = node.fwd()
            if a == 1:
                pass
            elif a > 0:
                nl = a * nl
                nh = a * nh
            else:
                nl, nh = a * nh, a * nl
            cl[k] = nl
            chi[k] = nh
            lo += nl
            hi += nh
            k += 1
        self.l = lo
        self.h = hi
        return lo, hi

    def bwd(self, tl, th) -> bool:
        lo = self.l
        hi = self.h
        if tl <= lo and th >= hi:
            return True
        if tl < lo:
            tl = lo
        if th > hi:
            th = hi
        if tl > th:
            return False
        finite = lo != NINF and hi != INF
        cl = self.cl
        chi = self.chi
        for k, (a, node) in enumerate(zip(self.coefs, self.nodes)):
            cl_k = cl[k]
            ch_k = chi[k]
            if finite:
                rest_lo = lo - cl_k
                rest_hi = hi - ch_k
            else:
                rest_lo = self.const + sum(cl[j] for j in range(len(cl)) if j != k)
                rest_hi = self.const + sum(chi[j] for j in range(len(chi)) if j != k)
            # a * x must lie in [tl - rest_hi, th - rest_lo].
            nl = tl - rest_hi
            nh = th - rest_lo
            if nl <= cl_k and nh >= ch_k:
                continue
            if a == 1:
                ok = node.bwd(nl, nh)
            elif a > 0:
                ok = node.bwd(cdiv(nl, a), fdiv(nh, a))
            elif a == -1:
                ok = node.bwd(-nh, -nl)
            else:
                ok = node.bwd(cdiv(-nh, -a), fdiv(-nl, -a))
            if not ok:
                return False
        return True


class CProd(Node):
    """``k * prod(node_j)``."""

    __slots__ = ("k", "nodes", "fl", "fh", "l", "h")

    def __init__(self, k: int, nodes: list[Node]):
        self.k = k
        self.nodes = nodes
        self.fl = [0] * len(nodes)
        self.fh = [0] * len(nodes)
        self.l = self.h = 0

    def var_indices(self) -> set[int]:
        return set().union(*(n.var_indices() for n in self.nodes))

    def fwd(self):
        fl = self.fl
        fh = self.fh
        lo = hi = 1
        j = 0
        for node in self.nodes:
            nl, nh = node.fwd()
            fl[j] = nl
            fh[j] = nh
            j += 1
            if lo >= 0 and nl >= 0:
                lo = lo * nl
                hi = 0 if hi == 0 or nh == 0 else hi * nh
            else:
                lo, hi = imul(lo, hi, nl, nh)
        k = self.k
        if k != 1:
            if k > 0:
                lo, hi = (0 if lo == 0 else k * lo), (0 if hi == 0 else k * hi)
            elif k < 0:
                lo, hi = (0 if hi == 0 else k * hi), (0 if lo == 0 else k * lo)
            else:
                lo = hi = 0
        self.l = lo
        self.h = hi
        return lo, hi

    def bwd(self, tl, th) -> bool:
        lo = self.l
        hi = self.h
        if tl <= lo and th >= hi:
            return True
        if tl < lo:
            tl = lo
        if th > hi:
            th = hi
        if tl > th:
            return False
        k = self.k
        if k == 0:
            return True
        # Bounds on the product of the factors.
        if k > 0:
            pl, ph = cdiv(tl, k), fdiv(th, k)
        else:
            pl, ph = cdiv(-th, -k), fdiv(-tl, -k)
        if pl > ph:
            return False
        nodes = self.nodes
        n = len(nodes)
        if pl == ph and pl != 0 and abs(pl) <= DIVISOR_LIMIT:
            # Factor reasoning: every factor divides the (fixed) product.
            c = abs(pl)
            for node in nodes:
                if not node.div(c):
                    return False
        if n == 1:
            return nodes[0].bwd(pl, ph)
        fl = self.fl
        fh = self.fh
        if n == 2:
            q = quotient(pl, ph, fl[1], fh[1])
            if q is not None and (q[0] > fl[0] or q[1] < fh[0]) and not nodes[0].bwd(q[0], q[1]):
                return False
            q = quotient(pl, ph, fl[0], fh[0])
            if q is not None and (q[0] > fl[1] or q[1] < fh[1]) and not nodes[1].bwd(q[0], q[1]):
                return False
            return True
        # Products of all other factors via prefix / suffix products.
        pre_l = [1] * (n + 1)
        pre_h = [1] * (n + 1)
        for j in range(n):
            pre_l[j + 1], pre_h[j + 1] = imul(pre_l[j], pre_h[j], fl[j], fh[j])
        sl = sh = 1
        for j in range(n - 1, -1, -1):
            ol, oh = imul(pre_l[j], pre_h[j], sl, sh)
            q = quotient(pl, ph, ol, oh)
            if q is not None and (q[0] > fl[j] or q[1] < fh[j]) and not nodes[j].bwd(q[0], q[1]):
                return False
            sl, sh = imul(sl, sh, fl[j], fh[j])
        return True

    def div(self, c: int) -> bool:
        k = abs(self.k)
        if k == 0 or c % k:
            return False
        c //= k
        for node in self.nodes:
            if not node.div(c):
                return False
        return True

    def mult(self, b: int) -> bool:
        return True


class CPow(Node):
    __slots__ = ("base", "e", "bl", "bh", "l", "h")

    def __init__(self, base: Node, e: int):
        self.base = base
        self.e = e
        self.bl = self.bh = self.l = self.h = 0

    def var_indices(self) -> set[int]:
        return self.base.var_indices()

    def fwd(self):
        bl, bh = self.base.fwd()
        self.bl = bl
        self.bh = bh
        lo, hi = ipow(bl, bh, self.e)
        self.l = lo
        self.h = hi
        return lo, hi

    def bwd(self, tl, th) -> bool:
        if tl <= self.l and th >= self.h:
            return True
        tl = max(tl, self.l)
        th = min(th, self.h)
        if tl > th:
            return False
        q = pow_base_bounds(tl, th, self.e, self.bl, self.bh)
        if q is None:
            return True
        return self.base.bwd(q[0], q[1])

    def div(self, c: int) -> bool:
        return self.e == 0 or self.base.div(c)


class _Binary(Node):
    """a OP b for an operator whose interval image is ``interval(al, ah, bl, bh)``; fwd keeps the operands'
    and the result's ranges for bwd."""

    __slots__ = ("a", "b", "al", "ah", "bl", "bh", "l", "h")
    interval = None  # (al, ah, bl, bh) -> (lo, hi), set by each operator

    def __init__(self, a: Node, b: Node):
        self.a = a
        self.b = b
        self.al = self.ah = self.bl = self.bh = self.l = self.h = 0

    def var_indices(self) -> set[int]:
        return self.a.var_indices() | self.b.var_indices()

    def fwd(self):
        al, ah = self.a.fwd()
        bl, bh = self.b.fwd()
        self.al, self.ah, self.bl, self.bh = al, ah, bl, bh
        lo, hi = self.interval(al, ah, bl, bh)
        self.l = lo
        self.h = hi
        return lo, hi


class CFloorDiv(_Binary):
    __slots__ = ()
    interval = staticmethod(ifloordiv)

    def bwd(self, tl, th) -> bool:
        if tl <= self.l and th >= self.h:
            return True
        tl = max(tl, self.l)
        th = min(th, self.h)
        if tl > th:
            return False
        al, ah, bl, bh = self.al, self.ah, self.bl, self.bh
        if bl >= 1:
            # a = z * b + r with 0 <= r < b.
            lo = imul(tl, tl, bl, bh)[0]
            hi = imul(th + 1, th + 1, bl, bh)[1] - 1
            if not self.a.bwd(lo, hi):
                return False
            if al >= 0:
                nbl, nbh = bl, bh
                if tl >= 1:
                    nbh = fdiv(ah, tl)
                if th >= 0:
                    nbl = max(bl, fdiv(al, th + 1) + 1)
                if not self.b.bwd(nbl, nbh):
                    return False
        return True


class CMod(_Binary):
    __slots__ = ()
    interval = staticmethod(imod)

    def bwd(self, tl, th) -> bool:
        if tl <= self.l and th >= self.h:
            return True
        tl = max(tl, self.l)
        th = min(th, self.h)
        if tl > th:
            return False
        if self.bl >= 1 and tl >= 1:
            # 0 < z < b, and for a >= 0 also z <= a.
            if not self.b.bwd(tl + 1, INF):
                return False
            if self.al >= 0 and not self.a.bwd(tl, INF):
                return False
        return True


# Relations.  prop() narrows domains (False: no solution); status() is -1 when
# the relation cannot hold in the current box, 1 when it holds everywhere in it,
# 0 otherwise.  Both may raise Empty (the relation then is false).


class Rel:
    __slots__ = ()

    def var_indices(self) -> set[int]:
        raise NotImplementedError

    def prop(self) -> bool:
        raise NotImplementedError

    def status(self) -> int:
        raise NotImplementedError

    def entailed(self) -> bool:
        """Holds for every point of the current domains (may look at values, used at the root)."""
        try:
            return self.status() == 1
        except Empty:
            return False


def safe_status(rel: Rel) -> int:
    try:
        return rel.status()
    except Empty:
        return -1


class RLe(Rel):
    """``E <= c``; ``c`` is mutable (the objective bound uses that)."""

    __slots__ = ("e", "c")

    def __init__(self, e: Node, c):
        self.e = e
        self.c = c

    def var_indices(self) -> set[int]:
        return self.e.var_indices()

    def prop(self) -> bool:
        lo, hi = self.e.fwd()
        c = self.c
        if lo > c:
            return False
        if hi > c:
            return self.e.bwd(lo, c)
        return True

    def status(self) -> int:
        lo, hi = self.e.fwd()
        if lo > self.c:
            return -1
        return 1 if hi <= self.c else 0


class REq(Rel):
    """``E == c``."""

    __slots__ = ("e", "c")

    def __init__(self, e: Node, c: int):
        self.e = e
        self.c = c

    def var_indices(self) -> set[int]:
        return self.e.var_indices()

    def prop(self) -> bool:
        lo, hi = self.e.fwd()
        c = self.c
        if c < lo or c > hi:
            return False
        if lo != hi:
            return self.e.bwd(c, c)
        return True

    def status(self) -> int:
        lo, hi = self.e.fwd()
        c = self.c
        if c < lo or c > hi:
            return -1
        return 1 if lo == hi else 0


class REqVar(Rel):
    """``E == v`` for a variable v: bounds both ways, fixed values both ways."""

    __slots__ = ("e", "v")

    def __init__(self, e: Node, v: CVar):
        self.e = e
        self.v = v

    def var_indices(self) -> set[int]:
        return self.e.var_indices() | {self.v.i}

    def prop(self) -> bool:
        e = self.e
        v = self.v
        for _ in range(3):
            lo, hi = e.fwd()
            vl, vh = v.fwd()
            if lo < vl or hi > vh:
                if not e.bwd(vl, vh):
                    return False
                lo, hi = e.fwd()
            if vl < lo or vh > hi:
                if not v.bwd(lo, hi):
                    return False
                nl, nh = v.fwd()
                if (nl, nh) != (vl, vh) and (nl > lo or nh < hi):
                    continue  # v's explicit values moved its bounds: narrow E again
            return True
        return True

    def status(self) -> int:
        lo, hi = self.e.fwd()
        vl, vh = self.v.fwd()
        if hi < vl or lo > vh:
            return -1
        return 1 if lo == hi == vl == vh else 0


class REqVars(Rel):
    """``x == y`` for two variables: full domain intersection."""

    __slots__ = ("x", "y", "y_private")

    def __init__(self, x: CVar, y: CVar, y_private: bool = False):
        self.x = x
        self.y = y
        self.y_private = y_private  # y is a list literal used only here

    def var_indices(self) -> set[int]:
        return {self.x.i, self.y.i}

    def prop(self) -> bool:
        x = self.x
        y = self.y
        xl, xh = x.fwd()
        yl, yh = y.fwd()
        lo = max(xl, yl)
        hi = min(xh, yh)
        if lo > hi:
            return False
        if not x.bwd(lo, hi) or not y.bwd(lo, hi):
            return False
        xv = x.values_in_range()
        yv = y.values_in_range()
        if xv is None and yv is None:
            xl, xh = x.fwd()
            yl, yh = y.fwd()
            if (xl, xh) != (yl, yh):
                lo = max(xl, yl)
                hi = min(xh, yh)
                return x.bwd(lo, hi) and y.bwd(lo, hi)
            return True
        if xv is None:
            return x._set_values(yv) if len(yv) < x.size() else True
        if yv is None:
            return y._set_values(xv) if len(xv) < y.size() else True
        if xv == yv:
            return True
        common = set(yv)
        both = tuple([v for v in xv if v in common])
        if not both:
            return False
        if both != xv and not x._set_values(both):
            return False
        if both != yv and not y._set_values(both):
            return False
        return True

    def status(self) -> int:
        xl, xh = self.x.fwd()
        yl, yh = self.y.fwd()
        if xh < yl or yh < xl:
            return -1
        return 1 if xl == xh == yl == yh else 0

    def entailed(self) -> bool:
        if self.status() == 1:
            return True
        if not self.y_private:
            return False
        # x == [list] with x's values all in the list: nothing left to enforce.
        yv = self.y.values_in_range()
        xv = self.x.values_in_range()
        if xv is None:
            xl, xh = self.x.fwd()
            if xh - xl > EXPLICIT_LIMIT:
                return False
            xv = range(xl, xh + 1)
        allowed = set(yv) if yv is not None else None
        yl, yh = self.y.fwd()
        return all((v in allowed) if allowed is not None else (yl <= v <= yh) for v in xv)


class RDiv(Rel):
    """``A % B == 0``: B divides A (B != 0)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Node, b: Node):
        self.a = a
        self.b = b

    def var_indices(self) -> set[int]:
        return self.a.var_indices() | self.b.var_indices()

    def prop(self) -> bool:
        a = self.a
        b = self.b
        al, ah = a.fwd()
        bl, bh = b.fwd()
        if bl == 0 or bh == 0:
            if bl == bh:
                return False
            if not (b.bwd(1, bh) if bl == 0 else b.bwd(bl, -1)):
                return False
            bl, bh = b.fwd()
            # B's enclosure may still touch 0 (HC4 is not exact); B != 0 regardless.
            if bl == 0:
                bl = 1
            if bh == 0:
                bh = -1
            if bl > bh:
                return False
        if bl == bh:
            d = bl if bl > 0 else -bl
            if d != 1:
                nl = cdiv(al, d) * d
                nh = fdiv(ah, d) * d
                if nl > nh:
                    return False
                if (nl > al or nh < ah) and not a.bwd(nl, nh):
                    return False
                if not a.mult(d):
                    return False
                al, ah = a.fwd()
        if al == ah:
            m = al if al > 0 else -al
            if m == 0:
                return True
            if m == INF:
                return True
            if not b.bwd(-m, m):
                return False
            bl, bh = b.fwd()
            if bl >= 1 and m <= DIVISOR_LIMIT:
                return b.div(m)
            return True
        if al >= 1 and bl >= 1:
            # A positive multiple of a positive B is at least B.
            if bh > ah and not b.bwd(bl, ah):
                return False
            if al < bl and not a.bwd(bl, ah):
                return False
        return True

    def status(self) -> int:
        al, ah = self.a.fwd()
        bl, bh = self.b.fwd()
        if bl == bh == 0:
            return -1
        if bl == bh:
            d = abs(bl)
            if al == ah and d != INF and al not in (INF, NINF):
                return 1 if al % d == 0 else -1
            if d == 1:
                return 1
            if cdiv(al, d) > fdiv(ah, d):
                return -1
            return 0
        if al == ah == 0 and (bl > 0 or bh < 0):
            return 1
        if al == ah and al not in (INF, NINF) and bl >= 1 and bl > abs(al):
            return -1
        return 0

    def entailed(self) -> bool:
        try:
            if self.status() == 1:
                return True
            bl, bh = self.b.fwd()
            al, ah = self.a.fwd()
        except Empty:
            return False
        if bl == bh and bl != 0 and isinstance(self.a, CVar):
            av = self.a.values_in_range()
            return av is not None and all(v % bl == 0 for v in av)
        if al == ah and al not in (INF, NINF) and isinstance(self.b, CVar) and bl >= 1:
            bv = self.b.values_in_range()
            return bv is not None and all(al % v == 0 for v in bv)
        return False


class RNe(Rel):
    """``A != B``."""

    __slots__ = ("a", "b")

    def __init__(self, a: Node, b: Node):
        self.a = a
        self.b = b

    def var_indices(self) -> set[int]:
        return self.a.var_indices() | self.b.var_indices()

    def prop(self) -> bool:
        al, ah = self.a.fwd()
        bl, bh = self.b.fwd()
        if al == ah and bl == bh:
            return al != bl
        if bl == bh and isinstance(self.a, CVar):
            return self.a.remove(bl)
        if al == ah and isinstance(self.b, CVar):
            return self.b.remove(al)
        return True

    def status(self) -> int:
        al, ah = self.a.fwd()
        bl, bh = self.b.fwd()
        if ah < bl or bh < al:
            return 1
        if al == ah == bl == bh:
            return -1
        return 0


class ROr(Rel):
    """Disjunction of alternatives, each a list of relations (a conjunction)."""

    __slots__ = ("alts",)

    def __init__(self, alts: list[list[Rel]]):
        self.alts = alts

    def var_indices(self) -> set[int]:
        return set().union(*(r.var_indices() for alt in self.alts for r in alt))

    @staticmethod
    def alt_status(alt: list[Rel]) -> int:
        result = 1
        for r in alt:
            s = safe_status(r)
            if s < 0:
                return -1
            if s == 0:
                result = 0
        return result

    def prop(self) -> bool:
        alive = None
        count = 0
        for alt in self.alts:
            s = self.alt_status(alt)
            if s > 0:
                return True
            if s == 0:
                count += 1
                if count > 1:
                    return True
                alive = alt
        if alive is None:
            return False
        # Unit rule: only one alternative can still hold, so enforce it.
        for r in alive:
            if not r.prop():
                return False
        return True

    def status(self) -> int:
        result = -1
        for alt in self.alts:
            s = self.alt_status(alt)
            if s > 0:
                return 1
            if s == 0:
                result = 0
        return result
