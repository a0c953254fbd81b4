"""Scoring rules of the authors' public harness (GAIR-NLP/OctoThinker eval/, refined from DeepSeekMath).

Re-implemented from eval/eval/eval_script.py, eval_utils.py and ocwcourses_eval_utils.py. Same decisions,
three deliberate differences, none of which changes a verdict on ordinary answers:
1. LaTeX is parsed with latex2sympy2_extended (math-verify's parser, already a dependency) instead of
   sympy.parsing.latex.parse_latex, which needs antlr4 4.11 while math-verify needs 4.13.
2. The harness feeds model output to Python ``eval`` (OCW numbers) and to sympy's ``parse_expr`` (which
   evals too); we evaluate arithmetic with an AST walker and only hand "safe" strings (digits, one-letter
   names, known functions) to parse_expr, so a completion cannot run code.
3. Timeouts are ours (timeouts.py) instead of a pebble process pool (15 s per item in the harness).
"""
from __future__ import annotations

import ast
import logging
import math
import operator
import re
from typing import Any

import numpy as np
import sympy

for _name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
    logging.getLogger(_name).setLevel(logging.ERROR)

INVALID = "[invalidanswer]"


# ---------------------------------------------------------------- safe parsing helpers
_SUBSCRIPT_COMMAND = re.compile(r"_(?:\{\\([a-zA-Z]+)\}|\\([a-zA-Z]+))")


def parse_latex(s: str):
    from latex2sympy2_extended import latex2sympy

    try:
        return latex2sympy(s)
    except Exception:  # noqa: BLE001 - any parser failure: one retry below, else the caller's "does not parse"
        # sympy's LaTeX grammar (the harness's parser) reads a control word it does not know as a symbol named
        # after it, so OCW's L_{\odot} (the solar luminosity) parses there; latex2sympy2_extended rejects it.
        # Retry with such subscripts spelled as names: L_{\odot} -> L_{odot}.
        spelled = _SUBSCRIPT_COMMAND.sub(lambda m: "_{" + (m.group(1) or m.group(2)) + "}", s)
        if spelled == s:
            raise
        return latex2sympy(spelled)


_SAFE_NAMES = {"sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp", "E", "I", "oo", "e", "i"}


def parse_expr_safe(s: str):
    """sympy.parse_expr on strings that cannot call arbitrary Python (no quotes, underscores, long names)."""
    if re.search(r"[^0-9A-Za-z+\-*/^().,\s]", s) or "__" in s:
        raise ValueError(f"unsafe or non-arithmetic expression: {s!r}")
    if any(len(name) > 1 and name not in _SAFE_NAMES for name in re.findall(r"[A-Za-z]+", s)):
        raise ValueError(f"unknown names in {s!r}")
    from sympy.parsing.sympy_parser import parse_expr

    return parse_expr(s)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def safe_arith(s: str) -> float:
    """Evaluate a plain arithmetic expression ("4.5e33", "2*10**3", "(1+2)/3"); what the harness eval()s."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 1000:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)}")
    return float(ev(ast.parse(s.strip(), mode="eval")))


def _parse(s: str):
    for f in (parse_latex, parse_expr_safe):
        try:
            return f(s)
        except Exception:  # noqa: BLE001 - any parser failure means "try the next one"
            pass
    return None


# ---------------------------------------------------------------- math_equal (eval_utils.py)
def parse_digits(num: Any) -> float | None:
    s = re.sub(",", "", str(num))
    try:
        return float(s)
    except ValueError:
        if s.endswith("%"):
            s = s[:-1].removesuffix("\\")
            try:
                return float(s) / 100
            except ValueError:
                pass
    return None


def symbolic_equal(a: str, b: str) -> bool:
    pa, pb = _parse(a), _parse(b)
    if pa is None or pb is None:
        return False
    try:
        if sympy.simplify(pa - pb) == 0:
            return True
    except Exception:  # noqa: BLE001
        pass
    try:
        return math.isclose(float(sympy.N(pa)), float(sympy.N(pb)), abs_tol=1e-3)
    except Exception:  # noqa: BLE001
        return False


def math_equal(pred: Any, ref: Any, include_percentage: bool = True) -> bool:
    """Numeric (with the harness's x100 / /100 percentage leniency, abs tol 1e-3), tuple/interval, matrix,
    equation and symbolic equality."""
    if str(pred) == str(ref):
        return True
    p_num, r_num = parse_digits(pred), parse_digits(ref)
    if p_num is not None and r_num is not None:
        candidates = [r_num / 100, r_num, r_num * 100] if include_percentage else [r_num]
        return any(math.isclose(c, p_num, abs_tol=1e-3) for c in candidates)
    if not pred and pred not in (0, False):
        return False
    ref, pred = str(ref).strip(), str(pred).strip()
    bracketed = r"(\(|\[).+(\)|\])"
    if re.match(bracketed, pred) and re.match(bracketed, ref):
        p_parts, r_parts = pred[1:-1].split(","), ref[1:-1].split(",")
        if len(p_parts) == len(r_parts) and all(math_equal(p, r, include_percentage) for p, r in zip(p_parts, r_parts)):
            return True
    if _is_matrix(pred) and _is_matrix(ref) and _matrix_equal(pred, ref, include_percentage):
        return True
    if pred.count("=") == 1 and ref.count("=") == 1:
        p = "{} - ({})".format(*(x.strip() for x in pred.split("=")))
        r = "{} - ({})".format(*(x.strip() for x in ref.split("=")))
        if symbolic_equal(p, r) or symbolic_equal(f"-({p})", r):
            return True
    elif pred.count("=") == 1 and len(pred.split("=")[0].strip()) <= 2 and "=" not in ref:
        if math_equal(pred.split("=")[1], ref, include_percentage):
            return True
    elif ref.count("=") == 1 and len(ref.split("=")[0].strip()) <= 2 and "=" not in pred:
        if math_equal(pred, ref.split("=")[1], include_percentage):
            return True
    return symbolic_equal(pred, ref)


def _is_matrix(s: str) -> bool:
    return s.startswith(("\\begin{pmatrix}", "\\begin{bmatrix}")) and s.endswith(("\\end{pmatrix}", "\\end{bmatrix}"))


def _matrix_equal(pred: str, ref: str, include_percentage: bool) -> bool:
    def rows(s: str) -> list[list[str]]:
        body = s[len("\\begin{pmatrix}"): -len("\\end{pmatrix}")]
        return [line.strip().split("&") for line in body.split("\\\\") if line.strip()]
    p_rows, r_rows = rows(pred), rows(ref)
    return len(p_rows) == len(r_rows) and all(
        len(p) == len(r) and all(math_equal(a, b, include_percentage) for a, b in zip(p, r))
        for p, r in zip(p_rows, r_rows))


# ---------------------------------------------------------------- is_correct and eval_* (eval_script.py)
def is_correct(pred: Any, ans: Any, prec: float = 1e-3) -> bool:
    if isinstance(pred, list) and isinstance(ans, list):
        # The harness compares every pair; the verdict depends only on which predictions and which answers found
        # a match. So pairs of identical strings (a match at once) go first, and a pair whose two sides both have
        # a match already is skipped: the same verdict without sympy on the cross pairs (a 4-interval union
        # answered right took 10+ s of simplify on the 12 cross pairs).
        pred_hit, ans_hit = set(), set()
        pairs = sorted(((i, j) for i in range(len(pred)) for j in range(len(ans))),
                       key=lambda ij: str(pred[ij[0]]) != str(ans[ij[1]]))
        for i, j in pairs:
            if i in pred_hit and j in ans_hit:
                continue
            if is_correct(pred[i], ans[j], prec):
                pred_hit.add(i)
                ans_hit.add(j)
        return len(pred_hit) == len(pred) and len(ans_hit) == len(ans)
    if isinstance(pred, list):
        return is_correct(pred, [ans], prec)
    pred, ans = str(pred), str(ans)
    if "\\cup" in pred and "\\cup" in ans:
        return is_correct(pred.split("\\cup"), ans.split("\\cup"), prec)
    try:
        if abs(float(pred.replace(",", "")) - float(ans.replace(",", ""))) < prec:
            return True
    except ValueError:
        pass
    return bool(ans and pred == ans) or math_equal(pred, ans)


def eval_math(pred: list[str], ans: list[str]) -> bool:
    """MATH: de-duplicate golds and predictions; score the last len(golds) predictions."""
    ans = list(dict.fromkeys(ans))
    pred = list(dict.fromkeys(pred))[-len(ans):] if ans else list(dict.fromkeys(pred))
    return is_correct(pred, ans)


def eval_olympiad(pred: list[str], ans: str) -> bool:
    """OlympiadBench: math-verify on the boxed final answer (argument order as in the harness)."""
    from math_verify import parse, verify

    try:
        p = parse(pred[0] if pred else "", parsing_timeout=None)
        return bool(verify(p, parse(ans, parsing_timeout=None), timeout_seconds=None))
    except Exception:  # noqa: BLE001
        return False


def eval_choice(pred: str, ans: str) -> bool:
    return str(pred).lower() == str(ans).lower()


# ---------------------------------------------------------------- OCW Courses (ocwcourses_eval_utils.py)
_OCW_UNITS = ["eV", " \\mathrm{~kg} \\cdot \\mathrm{m} / \\mathrm{s}", " kg m/s", "kg*m/s", "kg", "m/s", "m / s",
              "m s^{-1}", "\\text{ m/s}", " \\mathrm{m/s}", " \\text{ m/s}", "g/mole", "g/mol", "\\mathrm{~g}",
              "\\mathrm{~g} / \\mathrm{mol}", "W", "erg/s", "years", "year", "cm"]


def ocw_normalize_numeric(s: str):
    for unit in _OCW_UNITS:
        s = s.replace(unit, "").strip()
    for unit in ("m", "s", "cm"):
        s = s.replace("\\mathrm{" + unit + "}", "").replace("\\mathrm{~" + unit + "}", "").strip()
    s = s.strip("$")
    try:
        return safe_arith(s)
    except Exception:  # noqa: BLE001
        try:
            expr = parse_latex(s)
            return float(expr) if expr.is_number else INVALID
        except Exception:  # noqa: BLE001
            return INVALID


def ocw_numeric_equal(n1: float, n2: float, threshold: float = 0.01) -> bool:
    if np.isclose(n1, 0) or np.isclose(n2, 0) or np.isclose(n1 - n2, 0):
        return bool(np.abs(n1 - n2) < threshold * (n1 + n2) / 2)
    return bool(np.isclose(n1, n2))


def ocw_normalize_equation(s: str):
    s = s.removeprefix("\\[").removesuffix("\\]").replace("\\left(", "(").replace("\\right)", ")")
    s = s.replace("\\\\", "\\").strip("$")
    try:
        expr = parse_latex(s)
        return expr if isinstance(expr, sympy.Equality) else INVALID
    except Exception:  # noqa: BLE001
        return INVALID


def eval_ocw(pred: str, ans: str) -> bool:
    from octomega.eval.normalize import minerva_normalize

    try:
        float(ans)
        normalize, equal = ocw_normalize_numeric, ocw_numeric_equal
    except ValueError:
        if "=" in ans:
            normalize, equal = ocw_normalize_equation, (lambda x, y: x == y)
        else:  # the harness's is_tex_equiv returns at its string comparison: sympy is never reached
            normalize, equal = minerva_normalize, (lambda x, y: x == y)
    if not pred or pred == INVALID:
        return False
    model, gold = normalize(pred), normalize(ans)
    if isinstance(model, str) and model == INVALID:
        return False
    try:
        return bool(equal(model, gold))
    except Exception:  # noqa: BLE001
        return False
