"""Parser for the problem text syntax, a superset of ConstrINT's.

Precedence, loosest first (as in ConstrINT, ``%`` binds looser than ``+``, so
``a + b % c * d == 0`` means ``(a + b) % (c * d) == 0``):

    ;                     ends a constraint (the last one may omit it)
    |  ||                 alternatives (OR)
    == != <= < >= >       relations; chains like 1 <= x <= 8 mean both
    %                     modulo (non-associative)
    +  -                  sum
    *  //                 product, floor division
    unary -  +
    ^  **                 power, the exponent is an integer literal
    INT  NAME  [INT, ...]  ( ... )
"""

from __future__ import annotations

import re

from .model import (
    BinOp,
    Conjunction,
    Const,
    Constraint,
    Disjunction,
    Expr,
    ListLiteral,
    Model,
    Neg,
    Objective,
    ParseError,
    Pow,
    Relation,
)

_RELOPS = ("==", "!=", "<=", "<", ">=", ">")
# Longest operators first so that "//" is not read as two "/".
_OPERATORS = (
    "//",
    "**",
    "||",
    "==",
    "!=",
    "<=",
    ">=",
    "+",
    "-",
    "*",
    "%",
    "^",
    "<",
    ">",
    "|",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
)
_OBJECTIVE = re.compile(r"\s*objective\s*:\s*(maximi[sz]e|minimi[sz]e)\b", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[0-9]+(?:_[0-9]+)*")


class Token:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind: str, text: str, line: int, col: int):
        self.kind = kind  # "int", "name", "op" or "eof"
        self.text = text
        self.line = line
        self.col = col

    def describe(self) -> str:
        return "end of input" if self.kind == "eof" else repr(self.text)


Directive = tuple[str, str, int, int, int]


# One pass over the text: the first alternative that matches at a position wins (longest operators
# first so that "//" is not read as two "/").
_TOKEN = re.compile(
    r"(?P<nl>\n)|(?P<ws>[ \t\r\f\v]+)|(?P<comment>#[^\n]*)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<int>[0-9]+(?:_[0-9]+)*)|(?P<op>" + "|".join(re.escape(op) for op in _OPERATORS) + r")"
)


def tokenize(text: str, line: int = 1, col0: int = 0) -> tuple[list[Token], list[Directive]]:
    """Split ``text`` into tokens; also return the ``# objective:`` directives found
    as (sense, expression text, line, 0-based column of the expression, column of '#').

    ``line``/``col0`` offset the reported positions (used for the objective line).
    """
    tokens: list[Token] = []
    objectives: list[Directive] = []
    i = 0
    n = len(text)
    line_start = -col0
    match = _TOKEN.match
    while i < n:
        m = match(text, i)
        if m is None:
            ch = text[i]
            col = i - line_start + 1
            if ch == "=":
                raise ParseError("'=' is not an operator; use '==' for equality", line, col)
            if ch == "/":
                raise ParseError("'/' is not supported; use '//' for integer (floor) division", line, col)
            if ch == "&":
                raise ParseError("'&' is not supported; end the constraint with ';' and start another", line, col)
            raise ParseError(f"unexpected character {ch!r}", line, col)
        kind = m.lastgroup
        end = m.end()
        if kind == "nl":
            line += 1
            line_start = end
        elif kind == "ws":
            pass
        elif kind == "comment":
            om = _OBJECTIVE.match(text, i + 1, end)
            if om:
                col = i - line_start + 1
                sense = om.group(1).lower()
                objectives.append((sense, text[om.end() : end], line, om.end() - line_start, col))
        elif kind == "int":
            if end < n and (text[end].isalpha() or text[end] == "_"):
                raise ParseError(f"invalid number {text[i : end + 1]!r}", line, i - line_start + 1)
            tokens.append(Token("int", m.group(), line, i - line_start + 1))
        else:
            tokens.append(Token(kind, m.group(), line, i - line_start + 1))
        i = end
    tokens.append(Token("eof", "", line, n - line_start + 1))
    return tokens, objectives


class _Parser:
    def __init__(self, tokens: list[Token], model: Model, strip_parens: bool):
        if strip_parens:
            # ConstrINT ignores parentheses; this reproduces its reading exactly.
            tokens = [t for t in tokens if not (t.kind == "op" and t.text in "()")]
        self.tokens = tokens
        self.i = 0
        self.tok = tokens[0]  # the current token
        self.model = model

    def advance(self) -> Token:
        t = self.tok
        self.i += 1
        if self.i < len(self.tokens):
            self.tok = self.tokens[self.i]
        return t

    def at(self, *ops: str) -> bool:
        t = self.tok
        return t.kind == "op" and t.text in ops

    def error(self, message: str, tok: Token | None = None) -> ParseError:
        tok = tok or self.tok
        return ParseError(message, tok.line, tok.col)

    def expect(self, op: str, context: str) -> Token:
        if not self.at(op):
            raise self.error(f"expected {op!r} {context}, found {self.tok.describe()}")
        return self.advance()

    # Grammar.  Values are Expr or Constraint; types are checked where they meet.

    def constraints(self) -> list[Constraint]:
        result = []
        while self.tok.kind != "eof":
            if self.at(";"):
                self.advance()
                continue
            start = self.tok
            node = self.disjunction()
            if not isinstance(node, Constraint):
                raise self.error(
                    "expected a comparison (==, !=, <=, <, >=, >) in this constraint"
                    if self.tok.kind != "eof" and not self.at(";")
                    else "a constraint needs a comparison (==, !=, <=, <, >=, >)",
                    start,
                )
            result.append(node)
            if self.at(";"):
                self.advance()
            elif self.tok.kind != "eof":
                raise self.error(f"expected ';' to end the constraint, found {self.tok.describe()}")
        return result

    def disjunction(self):
        first_tok = self.tok
        node = self.relation()
        if not self.at("|", "||"):
            return node
        alternatives = [self.as_constraint(node, first_tok)]
        while self.at("|", "||"):
            self.advance()
            tok = self.tok
            alternatives.append(self.as_constraint(self.relation(), tok))
        items = []
        for alt in alternatives:
            items.extend(alt.alternatives())
        return Disjunction(items, (first_tok.line, first_tok.col))

    def as_constraint(self, node, tok: Token) -> Constraint:
        if isinstance(node, Constraint):
            return node
        raise self.error("each alternative of '|' must be a comparison", tok)

    def relation(self):
        first_tok = self.tok
        left = self.modulo()
        if not (self.tok.kind == "op" and self.tok.text in _RELOPS):
            return left
        left = self.as_expr(left, first_tok)
        relations = []
        while self.tok.kind == "op" and self.tok.text in _RELOPS:
            op_tok = self.advance()
            tok = self.tok
            right = self.as_expr(self.modulo(), tok)
            relations.append(Relation(op_tok.text, left, right, (first_tok.line, first_tok.col)))
            left = right
        if len(relations) == 1:
            return relations[0]
        return Conjunction(relations, (first_tok.line, first_tok.col))

    def as_expr(self, node, tok: Token) -> Expr:
        if isinstance(node, Expr):
            return node
        raise self.error("expected an arithmetic expression, found a comparison", tok)

    def modulo(self):
        first_tok = self.tok
        left = self.sum()
        if not self.at("%"):
            return left
        op_tok = self.advance()
        tok = self.tok
        right = self.as_expr(self.sum(), tok)
        node = BinOp("%", self.as_expr(left, first_tok), right, (op_tok.line, op_tok.col))
        if self.at("%"):
            raise self.error("chained '%' is ambiguous; use parentheses")
        return node

    def sum(self):
        first_tok = self.tok
        node = self.product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op_tok = self.advance()
            tok = self.tok
            right = self.as_expr(self.product(), tok)
            node = BinOp(op_tok.text, self.as_expr(node, first_tok), right, (op_tok.line, op_tok.col))
        return node

    def product(self):
        first_tok = self.tok
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "//"):
            op_tok = self.advance()
            tok = self.tok
            right = self.as_expr(self.unary(), tok)
            node = BinOp(op_tok.text, self.as_expr(node, first_tok), right, (op_tok.line, op_tok.col))
        return node

    def unary(self):
        if self.at("-", "+"):
            op_tok = self.advance()
            tok = self.tok
            operand = self.as_expr(self.unary(), tok)
            if op_tok.text == "+":
                return operand
            if isinstance(operand, Const):
                return Const(-operand.value, (op_tok.line, op_tok.col))
            return Neg(operand, (op_tok.line, op_tok.col))
        return self.power()

    def power(self):
        first_tok = self.tok
        base = self.atom()
        if not self.at("^", "**"):
            return base
        op_tok = self.advance()
        base = self.as_expr(base, first_tok)
        if self.tok.kind != "int":
            raise self.error("the exponent must be a non-negative integer literal")
        exponent = int(self.advance().text)
        if self.at("^", "**"):
            raise self.error("chained powers are ambiguous; use parentheses")
        return Pow(base, exponent, (op_tok.line, op_tok.col))

    def atom(self):
        tok = self.tok
        pos = (tok.line, tok.col)
        if tok.kind == "int":
            self.advance()
            return Const(int(tok.text), pos)
        if tok.kind == "name":
            self.advance()
            return self.model.get_var(tok.text, pos)
        if self.at("("):
            self.advance()
            node = self.disjunction()
            self.expect(")", f"to close '(' from line {tok.line}, column {tok.col}")
            return node
        if self.at("["):
            self.advance()
            values = []
            while True:
                sign = 1
                if self.at("-"):
                    self.advance()
                    sign = -1
                if self.tok.kind != "int":
                    raise self.error(f"expected an integer in the list, found {self.tok.describe()}")
                values.append(sign * int(self.advance().text))
                if self.at(","):
                    self.advance()
                    continue
                self.expect("]", f"to close '[' from line {tok.line}, column {tok.col}")
                break
            return ListLiteral(values, pos)
        raise self.error(f"expected an expression, found {tok.describe()}")


def parse_into(model: Model, text: str, *, strip_parens: bool = False) -> None:
    """Parse ``text`` and add its constraints (and objective, if any) to ``model``."""
    tokens, objectives = tokenize(text)
    parser = _Parser(tokens, model, strip_parens)
    objective = None
    if len(objectives) > 1:
        _, _, line, _, hash_col = objectives[1]
        raise ParseError("more than one '# objective:' line", line, hash_col)
    constraints = parser.constraints()
    if objectives:
        sense, expr_text, line, col, _ = objectives[0]
        objective = parse_objective_expr(model, sense, expr_text, line, col, strip_parens)
    model.constraints.extend(constraints)
    if objective is not None:
        model.objective = objective


def parse_objective_expr(
    model: Model, sense: str, text: str, line: int = 1, col: int = 0, strip_parens: bool = False
) -> Objective:
    tokens, _ = tokenize(text, line, col)
    if tokens and tokens[-1].kind == "eof" and len(tokens) >= 2 and tokens[-2].text == ";":
        del tokens[-2]
    parser = _Parser(tokens, model, strip_parens)
    if parser.tok.kind == "eof":
        raise parser.error(f"'{sense}' needs an expression")
    first = parser.tok
    node = parser.as_expr(parser.modulo(), first)
    if parser.tok.kind != "eof":
        raise parser.error(f"unexpected {parser.tok.describe()} after the objective expression")
    for sub in node.walk():
        if isinstance(sub, ListLiteral):
            raise ParseError("list literals are not allowed in the objective", *sub.pos)
    return Objective(sense, node, (first.line, first.col))


def parse_objective(model: Model, text: str) -> Objective:
    """Parse ``"maximize EXPR"`` / ``"minimize EXPR"`` against ``model``'s variables."""
    m = re.match(r"\s*(maximi[sz]e|minimi[sz]e|max|min)\b", text, re.IGNORECASE)
    if not m:
        raise ParseError("an objective reads 'maximize EXPR' or 'minimize EXPR'", 1, 1)
    return parse_objective_expr(model, m.group(1), text[m.end() :], 1, m.end())
