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
from math import gcd

from ._arith import (
    DIVISOR_LIMIT,
    INF,
    NINF,
    Empty,
    cdiv,
    cong_add,
    cong_mul,
    cong_pow,
    cong_scale,
    crt,
    divisors,
    fdiv,
    ifloordiv,
    imod,
    imul,
    ipow,
    mask_add,
    mask_mul,
    mask_of_range,
    mask_pow,
    mask_preimage_pow,
    mask_preimage_scale,
    mask_scale,
    pow_base_bounds,
    quotient,
    solve_linear_cong,
)

# Interval domains are turned into explicit value tuples (for multiples / holes)
# only up to this many values.
EXPLICIT_LIMIT = 4096
# Congruence classes of variables are kept up to this modulus (a finer class is forgotten, soundly).
CONG_LIMIT = 1 << 62


class Store:
    """Domains of all variables plus the list of variables changed by the last revision.

    ``C[i]`` is None or a congruence ``(m, r)``, m >= 2: every value of variable i is r modulo m (this
    keeps "a multiple of 7" or "odd" over ranges too wide for a value tuple).  Finite bounds are always
    members of the class, and a value tuple holds members only.
    """

    __slots__ = ("L", "H", "V", "C", "changed")

    def __init__(self) -> None:
        self.L: list = []
        self.H: list = []
        self.V: list = []
        self.C: list = []
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
        return self.narrow_cong(b, 0)

    def var_indices(self) -> set[int]:
        return set()

    # Congruence reasoning (docs/solver.md, "Number-theoretic rules"); call after fwd().

    def cong(self):
        """A class (m, r) that holds every value of the node (m = 0: exactly r)."""
        return (1, 0)

    def narrow_cong(self, m: int, r: int) -> bool:
        """The value must be r modulo m (m = 0: equal to r)."""
        return True

    def res(self, m: int) -> int:
        """Bit mask of the residues modulo m the value can take."""
        return (1 << m) - 1

    def narrow(self, m: int, allowed: int) -> bool:
        """The value's residue modulo m must be in the mask ``allowed``."""
        return True


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

    def cong(self):
        return (0, self.c)

    def narrow_cong(self, m: int, r: int) -> bool:
        return (self.c - r) % m == 0 if m else self.c == r

    def res(self, m: int) -> int:
        return 1 << (self.c % m)

    def res_env(self, m: int, env: dict) -> int:
        return self.c % m

    def narrow(self, m: int, allowed: int) -> bool:
        return allowed >> (self.c % m) & 1 == 1


class CVar(Node):
    __slots__ = ("i", "L", "H", "V", "C", "ch")

    def __init__(self, i: int, store: Store):
        self.i = i
        self.L = store.L
        self.H = store.H
        self.V = store.V
        self.C = store.C
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
        else:
            cong = self.C[i]
            if cong is not None:
                # Snap the new bounds to the congruence class.
                m, r = cong
                if lo != l0 and lo != NINF:
                    lo += (r - lo) % m
                if hi != h0 and hi != INF:
                    hi -= (hi - r) % m
                if lo > hi:
                    return False
        L[i] = lo
        H[i] = hi
        self.ch.append(i)
        return True

    def _set_values(self, new: tuple) -> bool:
        i = self.i
        cong = self.C[i]
        if cong is not None:
            m, r = cong
            new = tuple([v for v in new if v % m == r])
        if not new:
            return False
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
            if b < 0:
                b = -b
            if b <= 1:
                return True
            if not self.congr(b, 0):
                return False
            lo = self.L[i]
            hi = self.H[i]
            step = self.C[i][0] if self.C[i] is not None else b
            if lo != hi and lo != NINF and hi != INF and (hi - lo) // step < EXPLICIT_LIMIT:
                return self._set_values(tuple(range(lo, hi + 1, step)))
            return True
        a = bisect_left(vals, lo)
        e = bisect_right(vals, hi)
        new = tuple([v for v in vals[a:e] if v % b == 0])
        if len(new) == e - a:
            return True
        return self._set_values(new)

    def congr(self, m: int, r: int) -> bool:
        """Restrict the domain to the values that are r modulo m."""
        if m < 0:
            m = -m
        i = self.i
        if m == 0:
            return self.bwd(r, r)
        if m == 1:
            return True
        r %= m
        old = self.C[i]
        if old is not None:
            if old[0] % m == 0:
                return old[1] % m == r
            new = crt(old, (m, r))
            if new is None:
                return False
            if new[0] > CONG_LIMIT:
                return True  # forgetting a class is sound
        else:
            new = (m, r)
        M, R = new
        lo = self.L[i]
        hi = self.H[i]
        vals = self.V[i]
        self.C[i] = new
        if vals is not None:
            kept = tuple([v for v in vals[bisect_left(vals, lo) : bisect_right(vals, hi)] if v % M == R])
            if not kept:
                return False
            self.V[i] = kept
            lo = kept[0]
            hi = kept[-1]
        else:
            if lo != NINF:
                lo += (R - lo) % M
            if hi != INF:
                hi -= (hi - R) % M
            if lo > hi:
                return False
        self.L[i] = lo
        self.H[i] = hi
        self.ch.append(i)
        return True

    def narrow_cong(self, m: int, r: int) -> bool:
        return self.congr(m, r)

    def res_env(self, m: int, env: dict) -> int:
        return env[self.i]

    def cong(self):
        i = self.i
        lo = self.L[i]
        if lo == self.H[i]:
            return (0, lo)
        c = self.C[i]
        return (1, 0) if c is None else c

    def res(self, m: int) -> int:
        i = self.i
        lo = self.L[i]
        hi = self.H[i]
        if lo == hi:
            return 1 << (lo % m)
        vals = self.V[i]
        if vals is not None:
            a = bisect_left(vals, lo)
            b = bisect_right(vals, hi)
            if b - a <= 4 * m:
                out = 0
                for v in vals[a:b]:
                    out |= 1 << (v % m)
                return out
        c = self.C[i]
        if lo == NINF or hi == INF:
            if c is None:
                return (1 << m) - 1
            return mask_of_range(c[1], c[1] + c[0] * m, c[0], m)
        return mask_of_range(lo, hi, 1 if c is None else c[0], m)

    def narrow(self, m: int, allowed: int) -> bool:
        """Keep the values whose residue modulo m is in the mask ``allowed``."""
        cur = self.res(m)
        keep = cur & allowed
        if keep == cur:
            return True
        if not keep:
            return False
        i = self.i
        vals = self.V[i]
        lo = self.L[i]
        hi = self.H[i]
        if vals is not None:
            a = bisect_left(vals, lo)
            b = bisect_right(vals, hi)
            return self._set_values(tuple([v for v in vals[a:b] if keep >> (v % m) & 1]))
        count = bin(keep).count("1")
        if m % count == 0:
            # keep may be one class modulo g = m / count.
            g = m // count
            r = (keep & -keep).bit_length() - 1
            if keep == mask_of_range(r, r + m - 1, g, m):
                return self.congr(g, r)
        if lo == NINF or hi == INF:
            return True
        # Bounds to the nearest values with an allowed residue.
        c = self.C[i]
        step = 1 if c is None else c[0]
        while not keep >> (lo % m) & 1:
            lo += step
            if lo > hi:
                return False
        while not keep >> (hi % m) & 1:
            hi -= step
        return self.bwd(lo, hi)

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
            cong = self.C[i]
            step = 1 if cong is None else cong[0]
            if cong is not None and v % step != cong[1]:
                return True
            if (hi - lo) // step >= EXPLICIT_LIMIT:
                return True
            return self._set_values(tuple([x for x in range(lo, hi + 1, step) if x != v]))
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
            cong = self.C[i]
            if cong is not None:
                return (self.H[i] - self.L[i]) // cong[0] + 1
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

    __slots__ = ("const", "coefs", "nodes", "cl", "chi", "l", "h", "parts")

    def __init__(self, const: int, coefs: list[int], nodes: list[Node]):
        self.const = const
        self.coefs = coefs
        self.nodes = nodes
        self.cl = [0] * len(nodes)
        self.chi = [0] * len(nodes)
        self.l = self.h = 0
        self.parts = None  # for the residue masks, built on first use (_parts)

    def res_env(self, m: int, env: dict) -> int:
        return (self.const + sum(a * n.res_env(m, env) for a, n in zip(self.coefs, self.nodes))) % m

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

    def cong(self):
        acc = (0, self.const)
        for a, node in zip(self.coefs, self.nodes):
            acc = cong_add(acc, cong_scale(node.cong(), a))
            if acc[0] == 1:
                break
        return acc

    def narrow_cong(self, m: int, r: int) -> bool:
        """Linear congruence rule: const + sum(a_k x_k) == r (mod m).  The classes of the terms add up
        (the gcd of the coefficients is the case of unconstrained x_k); each term must then make up what
        the others leave: a_k x_k == r - const - rest (mod gcd(m, modulus of the rest))."""
        terms = [cong_scale(node.cong(), a) for a, node in zip(self.coefs, self.nodes)]
        n = len(terms)
        pre = [(0, self.const)] * (n + 1)
        for k in range(n):
            pre[k + 1] = cong_add(pre[k], terms[k])
        total = pre[n]
        g = gcd(total[0], m)
        if (total[1] - r) % g if g else total[1] != r:
            return False
        suf = (0, 0)
        for k in range(n - 1, -1, -1):
            rest = cong_add(pre[k], suf)
            suf = cong_add(suf, terms[k])
            mk = gcd(rest[0], m)
            if mk == 1:
                continue
            a = self.coefs[k]
            need = r - rest[1]
            if mk == 0:  # a_k x_k == need exactly
                if need % a:
                    return False
                if not self.nodes[k].narrow_cong(0, need // a):
                    return False
                continue
            sol = solve_linear_cong(a % mk, need % mk, mk)
            if sol is None:
                return False
            if sol[0] > 1 and not self.nodes[k].narrow_cong(sol[0], sol[1]):
                return False
        return True

    def _parts(self) -> list:
        """The sum as independent parts for the residue masks: (coefficient, node) for a term, or
        (variable, [(coefficient, node), ...]) for the polynomial terms in one variable, whose residues
        are evaluated together (3 x + 9 x^2 is always even, though 3 x and 9 x^2 each can be odd)."""
        if self.parts is None:
            by_var: dict[int, list] = {}
            parts: list = []
            for a, node in zip(self.coefs, self.nodes):
                vs = node.var_indices()
                if len(vs) == 1 and polynomial(node):
                    by_var.setdefault(next(iter(vs)), []).append((a, node))
                else:
                    parts.append((a, node))
            for terms in by_var.values():
                if len(terms) == 1:
                    parts.append(terms[0])
                else:
                    var = next(n for n in _var_nodes(terms[0][1]))
                    parts.append((var, terms))
            self.parts = parts
        return self.parts

    @staticmethod
    def _part_mask(part, m: int) -> int:
        head, body = part
        if isinstance(head, int):
            t = body.res(m)
            return t if head == 1 else mask_scale(t, head, m)
        out = 0
        i = head.i
        for u in _bits(head.res(m)):
            env = {i: u}
            out |= 1 << (sum(a * n.res_env(m, env) for a, n in body) % m)
        return out

    @staticmethod
    def _part_narrow(part, m: int, allowed: int) -> bool:
        head, body = part
        if isinstance(head, int):
            return body.narrow(m, mask_preimage_scale(allowed, head, m))
        ok = 0
        i = head.i
        for u in _bits(head.res(m)):
            env = {i: u}
            if allowed >> (sum(a * n.res_env(m, env) for a, n in body) % m) & 1:
                ok |= 1 << u
        return head.narrow(m, ok)

    def res(self, m: int) -> int:
        full = (1 << m) - 1
        acc = 1 << (self.const % m)
        for part in self._parts():
            acc = mask_add(acc, self._part_mask(part, m), m)
            if acc == full:
                break
        return acc

    def narrow(self, m: int, allowed: int) -> bool:
        """Residue rule: the parts' residue sets add up (modulo m) to the sum's; each part keeps the
        residues that, with some residue of the rest, land in ``allowed``."""
        parts = self._parts()
        n = len(parts)
        masks = [self._part_mask(part, m) for part in parts]
        pre = [1 << (self.const % m)]
        for k in range(n):
            pre.append(mask_add(pre[k], masks[k], m))
        total = pre[n]
        if not total & allowed:
            return False
        if not total & ~allowed:
            return True
        suf = 1
        for k in range(n - 1, -1, -1):
            rest = mask_add(pre[k], suf, m)
            suf = mask_add(suf, masks[k], m)
            # residues t of this part with t + s in allowed for some s in rest
            term = mask_add(allowed, mask_scale(rest, -1, m), m)
            if masks[k] & ~term and not self._part_narrow(parts[k], m, term):
                return False
        return True


def _bits(mask: int):
    while mask:
        low = mask & -mask
        mask ^= low
        yield low.bit_length() - 1


def polynomial(node: Node) -> bool:
    """Built from constants and variables by sums, products and powers only (has res_env)."""
    if isinstance(node, (CConst, CVar)):
        return True
    if isinstance(node, (CSum, CProd)):
        return all(polynomial(n) for n in node.nodes)
    if isinstance(node, CPow):
        return polynomial(node.base)
    return False


def _var_nodes(node: Node):
    if isinstance(node, CVar):
        yield node
    elif isinstance(node, (CSum, CProd)):
        for n in node.nodes:
            yield from _var_nodes(n)
    elif isinstance(node, CPow):
        yield from _var_nodes(node.base)


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
        if pl >= 0 and min(fl) >= 1:
            # Positive factors (the common case): the same bounds as below without the sign cases.
            pre_l = [1] * (n + 1)
            pre_h = [1] * (n + 1)
            for j in range(n):
                pre_l[j + 1] = pre_l[j] * fl[j]
                pre_h[j + 1] = pre_h[j] * fh[j]
            sl = sh = 1
            for j in range(n - 1, -1, -1):
                xl = cdiv(pl, pre_h[j] * sh)
                xh = fdiv(ph, pre_l[j] * sl)
                if (xl > fl[j] or xh < fh[j]) and not nodes[j].bwd(xl, xh):
                    return False
                sl *= fl[j]
                sh *= fh[j]
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

    def cong(self):
        acc = (0, self.k)
        for node in self.nodes:
            acc = cong_mul(acc, node.cong())
            if acc[0] == 1:
                break
        return acc

    def narrow_cong(self, m: int, r: int) -> bool:
        total = self.cong()
        g = gcd(total[0], m)
        if (total[1] - r) % g if g else total[1] != r:
            return False
        if m == 0 or g == 1:
            return True
        # A factor whose co-factor is fixed (c): c * f == r (mod m).
        nodes = self.nodes
        classes = [node.cong() for node in nodes]
        for j, node in enumerate(nodes):
            rest = (0, self.k)
            for q, c in enumerate(classes):
                if q != j:
                    rest = cong_mul(rest, c)
            if rest[0] != 0:
                continue
            sol = solve_linear_cong(rest[1] % m, r % m, m)
            if sol is None:
                return False
            if sol[0] > 1 and not node.narrow_cong(sol[0], sol[1]):
                return False
        return True

    def res_env(self, m: int, env: dict) -> int:
        acc = self.k % m
        for node in self.nodes:
            acc = acc * node.res_env(m, env) % m
        return acc

    def res(self, m: int) -> int:
        acc = 1 << (self.k % m)
        for node in self.nodes:
            if acc == 1:
                break  # already 0 modulo m
            acc = mask_mul(acc, node.res(m), m)
        return acc

    def narrow(self, m: int, allowed: int) -> bool:
        nodes = self.nodes
        masks = [node.res(m) for node in nodes]
        for j, node in enumerate(nodes):
            rest = 1 << (self.k % m)
            for q, t in enumerate(masks):
                if q != j:
                    rest = mask_mul(rest, t, m)
            ok = 0
            for x in _bits(masks[j]):
                if mask_scale(rest, x, m) & allowed:
                    ok |= 1 << x
            if not ok:
                return False
            if masks[j] & ~ok:
                if not node.narrow(m, ok):
                    return False
                masks[j] &= ok
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

    def cong(self):
        return cong_pow(self.base.cong(), self.e)

    def narrow_cong(self, m: int, r: int) -> bool:
        total = self.cong()
        g = gcd(total[0], m)
        return (total[1] - r) % g == 0 if g else total[1] == r

    def res_env(self, m: int, env: dict) -> int:
        return pow(self.base.res_env(m, env), self.e, m)

    def res(self, m: int) -> int:
        return mask_pow(self.base.res(m), self.e, m)

    def narrow(self, m: int, allowed: int) -> bool:
        base = self.base.res(m)
        ok = base & mask_preimage_pow(allowed, self.e, m)
        if not ok:
            return False
        return ok == base or self.base.narrow(m, ok)


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

    def cong(self):
        # a % d == a - d * (a // d): a's class modulo gcd(its modulus, d)
        if self.bl != self.bh or self.bl in (0, INF, NINF):
            return (1, 0)
        a = self.a.cong()
        g = gcd(a[0], self.bl)
        return (g, a[1] % g)

    def res(self, m: int) -> int:
        d = self.bl
        if d == self.bh and d not in (0, INF, NINF) and d % m == 0:
            return self.a.res(m)
        return (1 << m) - 1

    def narrow_cong(self, m: int, r: int) -> bool:
        d = self.bl
        if d != self.bh or d in (0, INF, NINF):
            return True
        if m == 0:
            # a % d == r: r is a remainder of d (the sign of d) and a == r modulo d
            if not (0 <= r < d or d < r <= 0):
                return False
            return self.a.narrow_cong(d, r)
        if d % m == 0:  # a % d == a modulo m
            return self.a.narrow_cong(m, r)
        return True

    def narrow(self, m: int, allowed: int) -> bool:
        d = self.bl
        if d == self.bh and d not in (0, INF, NINF) and d % m == 0:
            return self.a.narrow(m, allowed)
        return True

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
    delayed = False  # run once the others are at a fixpoint (see Solver.propagate)
    derived = False  # implied by the others (does not count as a constraint of its variables)

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
        e = self.e
        lo, hi = e.fwd()
        c = self.c
        if lo > c:
            return False
        if hi > c:
            # One more forward pass: the narrowing may have fixed variables into a violation that
            # this propagator (not re-queued for its own changes) would otherwise leave to the search.
            return e.bwd(lo, c) and e.fwd()[0] <= c
        return True

    def status(self) -> int:
        lo, hi = self.e.fwd()
        if lo > self.c:
            return -1
        return 1 if hi <= self.c else 0


class RLeDerived(RLe):
    """``E <= c`` implied by other constraints (the strict-divisor rule)."""

    __slots__ = ()
    derived = True


class REq(Rel):
    """``E == c``."""

    __slots__ = ("e", "c")

    def __init__(self, e: Node, c: int):
        self.e = e
        self.c = c

    def var_indices(self) -> set[int]:
        return self.e.var_indices()

    def prop(self) -> bool:
        e = self.e
        lo, hi = e.fwd()
        c = self.c
        if c < lo or c > hi:
            return False
        if lo != hi:
            if not e.bwd(c, c):
                return False
            lo, hi = e.fwd()  # as in RLe: catch a violation the narrowing fixed
            return lo <= c <= hi
        return True

    def status(self) -> int:
        lo, hi = self.e.fwd()
        c = self.c
        if c < lo or c > hi:
            return -1
        return 1 if lo == hi else 0


class REqDerived(REq):
    """``E == c`` implied by other constraints (a combination of equalities)."""

    __slots__ = ()
    derived = True


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


# The congruence rules (RMod) only run where some variable of the equality ranges over more than this
# many values: below it, search enumerates faster than the rules prune (the kernel-tiling problems'
# widest ranges, shared-memory bytes, stay below it).  Tests set it to 0 to check the rules' soundness
# against brute force on small domains.
CONG_MIN_RANGE = 1 << 20
# Residue masks only pay where some variable's range is this wide; on small domains search is cheaper.
MASK_MIN_RANGE = 64
# A range of this many steps of its class holds every residue of the class modulo each mask modulus.
RESIDUE_PERIOD = 64


class RMod(Rel):
    """The number-theoretic side of an equality ``base`` (an REq ``E == c`` or an REqVar ``E == v``):
    congruence classes both ways (``Node.narrow_cong``) and, with ``moduli``, residue masks modulo each
    (``Node.narrow``).  Kept apart from the bounds propagator so that the search runs it only once the
    cheap propagators are at a fixpoint (``delayed``)."""

    __slots__ = ("base", "e", "v", "c", "moduli", "mvars", "square_pairs", "last_key")
    delayed = True
    derived = True

    def __init__(self, base, moduli: tuple[int, ...], mvars: tuple):
        self.base = base
        self.e = base.e
        self.v = getattr(base, "v", None)
        self.c = getattr(base, "c", 0)
        self.moduli = moduli
        self.mvars = mvars
        self.last_key = None
        # Term pairs s * u^2 and -s * v^2 of E == c (difference-of-squares rule, see squares()).
        self.square_pairs = []
        e = self.e
        if self.v is None and isinstance(e, CSum):
            sq = [k for k, n in enumerate(e.nodes) if isinstance(n, CPow) and n.e == 2 and isinstance(n.base, CVar)]
            self.square_pairs = [(p, q) for p in sq for q in sq if e.coefs[p] > 0 and e.coefs[q] == -e.coefs[p]]

    def squares(self) -> bool:
        """Difference-of-squares rule: s u^2 - s v^2 == D with u, v >= 0 and D >= 1 means u >= v + t for the
        least gap t >= 1 the congruence classes of u and v allow, and then (u - v)(u + v) == D / s gives
        u + v <= D / (s t): v <= (D / (s t) - t) / 2, u <= (D / (s t) + t) / 2.  (With a^2 + b^2 == c^2
        this bounds b and c by a^2 / 2 at once, where bounds reasoning alone creeps down one or two values
        per revision.)"""
        e = self.e
        lo, hi = e.fwd()
        for p, q in self.square_pairs:
            s = e.coefs[p]
            u = e.nodes[p].base
            v = e.nodes[q].base
            if u.L[u.i] < 0 or v.L[v.i] < 0:
                continue
            # s (u^2 - v^2) == c - (the other terms)
            rest_lo = lo - e.cl[p] - e.cl[q]
            rest_hi = hi - e.chi[p] - e.chi[q]
            d_lo = cdiv(self.c - rest_hi, s)
            d_hi = fdiv(self.c - rest_lo, s)
            if d_lo >= 1 and d_hi != INF:
                big, small, top = u, v, d_hi
            elif d_hi <= -1 and d_lo != NINF:
                big, small, top = v, u, -d_lo
            else:
                continue
            # the least gap t = big - small >= 1 that the classes allow (both odd: t >= 2); then
            # t (big + small) <= top gives small <= (top / t - t) / 2 and big <= (top / t + t) / 2
            cb = big.C[big.i] or (1, 0)
            cs = small.C[small.i] or (1, 0)
            g = gcd(cb[0], cs[0])
            t = (cb[1] - cs[1]) % g or g
            width = top // t
            if not small.bwd(
                small.L[small.i],
                min(small.H[small.i] if small.H[small.i] != INF else top, (width - t) // 2, big.H[big.i] - t),
            ):
                return False
            if not big.bwd(max(big.L[big.i], small.L[small.i] + t), (width + t) // 2):
                return False
            lo, hi = e.fwd()
        return True

    def var_indices(self) -> set[int]:
        return self.base.var_indices()

    def status(self) -> int:
        return self.base.status()

    def wide(self, limit: int = MASK_MIN_RANGE) -> bool:
        """Some variable ranges over more than ``limit`` values."""
        for v in self.mvars:
            i = v.i
            if v.H[i] - v.L[i] > limit:
                return True
        return False

    def residue_key(self) -> tuple:
        """What the rules read: each variable's class or fixed value, and with residue masks also its
        bounds where its range is shorter than the largest modulus' period (wider ranges cover every
        residue of their class)."""
        key = []
        if not self.moduli:
            for v in self.mvars:
                i = v.i
                lo = v.L[i]
                key.append(lo if lo == v.H[i] else v.C[i])
            return tuple(key)
        for v in self.mvars:
            i = v.i
            c = v.C[i]
            lo = v.L[i]
            hi = v.H[i]
            if v.V[i] is not None or hi - lo < RESIDUE_PERIOD * (1 if c is None else c[0]):
                key.append((c, lo, hi))
            else:
                key.append(c)
        return tuple(key)

    def prop(self) -> bool:
        # The nodes' intervals cached by the last fwd() may be wider than now: still sound.
        if self.square_pairs and not self.squares():
            return False
        if not self.wide(CONG_MIN_RANGE):
            return True
        key = self.residue_key()
        if key == self.last_key:
            return True  # the same classes and residues as after the last run: nothing new to find
        e = self.e
        v = self.v
        if v is None:
            c = self.c
            if not e.narrow_cong(0, c):
                return False
            if self.moduli and self.wide():
                for m in self.moduli:
                    if not e.narrow(m, 1 << (c % m)):
                        return False
        else:
            if not v.congr(*e.cong()) or not e.narrow_cong(*v.cong()):
                return False
            if self.moduli and self.wide():
                for m in self.moduli:
                    if not v.narrow(m, e.res(m)) or not e.narrow(m, v.res(m)):
                        return False
        self.last_key = self.residue_key()
        return True


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
        C = x.C
        if C[x.i] != C[y.i] and (not y.congr(*x.cong()) or not x.congr(*y.cong())):
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
            # Quotient rule: A = q * B for an integer q in [ceil(al / bh), floor(ah / bl)], so
            # qlo * bl <= A <= qhi * bh and ceil(al / qhi) <= B <= floor(ah / qlo).  With qlo = 1 this
            # is "a positive multiple is at least its divisor"; where the bounds already separate A from B
            # (al > bh) it is the strict-divisor bound A >= 2 * B.
            qlo = cdiv(al, bh)
            qhi = fdiv(ah, bl)
            if qlo > qhi:
                return False
            nbl = cdiv(al, qhi)
            nbh = fdiv(ah, qlo)
            if (nbl > bl or nbh < bh) and not b.bwd(nbl, nbh):
                return False
            nal = qlo * bl
            nah = qhi * bh
            if (nal > al or nah < ah) and not a.bwd(nal, nah):
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
