"""String normalisation of math answers, three flavours, each matching a public harness's rules.

- ``harness_strip``: the DeepSeekMath / OctoThinker evaluation harness (eval/data_processing/answer_extraction.py,
  ``strip_string``), applied to every extracted MATH-style answer and gold.
- ``hendrycks_strip``: Hendrycks et al.'s MATH normalisation as kept in OctoThinker's RL reward
  (rl/verl/utils/reward_score/math_verifier.py), the last fallback of the reward.
- ``minerva_normalize``: Lewkowycz et al. (2022) appendix D (Minerva), used by the harness for OCW answers
  and by the RL reward before math-verify.
Written from the rules of those files; quirks are kept on purpose so that our numbers match theirs.
"""
from __future__ import annotations

import re


# ---------------------------------------------------------------- brace-aware \boxed{...} extraction
def boxed_contents(text: str, allow_percent: bool = True) -> list[str]:
    """Contents of every ``boxed{...}`` in text, braces matched (any nesting depth), in order.

    Like the harness, an unclosed box is dropped and ``\\boxed{50}%`` keeps the closing brace and percent sign
    (``50}%``) when allow_percent is set (the harness then strips ``}`` via its trailing-punctuation rule).
    """
    out = []
    for piece in text.split("boxed{")[1:]:
        depth = 0
        for i, ch in enumerate(piece):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth < 0:
                    out.append(piece[: i + 1] if allow_percent and piece[i + 1: i + 2] == "%" else piece[:i])
                    break
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched; None when there is none."""
    idx = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if idx < 0:
        return None
    start = text.index("{", idx) + 1
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


# ---------------------------------------------------------------- shared small fixes
def fix_fracs(s: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72} (first character of each argument only)."""
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[:1] == "{" or not sub:
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b, rest = sub[0], sub[1], sub[2:]
        out += "{" + a + "}" + ("{" + b + "}" + rest if b != "{" else b + rest)
    return out


def fix_a_slash_b(s: str, allow_sqrt: bool = True) -> str:
    r"""'3/4' -> '\frac{3}{4}' when both sides are integers (harness: or contain sqrt)."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = parts
    try:
        a2 = a if allow_sqrt and "sqrt" in a else int(a)
        b2 = b if allow_sqrt and "sqrt" in b else int(b)
    except ValueError:
        return s
    return f"\\frac{{{a2}}}{{{b2}}}" if s == f"{a2}/{b2}" else s


# ---------------------------------------------------------------- DeepSeekMath / OctoThinker harness
def harness_strip(s: object) -> str:
    """The harness's strip_string: units, \\left/\\right, \\dfrac, degrees, dollars, spaces, trailing zeros..."""
    s = str(s).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s.split("{", 1)[1][:-1]
    for a, b in (("tfrac", "frac"), ("dfrac", "frac"), ("cfrac", "frac"), ("\\left", ""), ("\\right", "")):
        s = s.replace(a, b)
    unitless = re.sub(r"\\text{.*?}$", "", s).strip()  # a trailing \text{...} is a unit
    if unitless and unitless != s:
        s = unitless
    s = s.replace("^{\\circ}", "").strip().replace("^\\circ", "").strip()
    s = re.sub(r"\{(c|m)?m\}(\^(2|3))?", "", s).strip()
    s = re.sub(r"p\.m\.$", "", s).strip()
    s = re.sub(r"(\d)\s*t$", r"\1", s).strip()
    s = s.replace("\\$", "").replace("$", "").replace("x\\in", "").replace("\\%", "%")
    s = s.replace(" .", " 0.").replace("{.", "{0.").replace("\\cdot", "")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty").replace("\\mathbf", "").replace("\\mathrm", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:  # engineers' imaginary unit
        s = s.replace("j", "i")
    # A match starts only at the start of a digit run, and runs are taken whole: the plain backtracking forms were
    # quadratic on a long digit string (minutes for 20k digits, as a pathological completion can hold).
    s = re.sub(r"(?<!\d)(\d++)\.0++([^\d])", r"\1\2", s)  # 2.000x -> 2x
    s = re.sub(r"(?<!\d)(\d++)\.0++$", r"\1", s)  # 2.00 -> 2
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    s = re.sub(r"\\sqrt(-?[0-9.a-zA-Z]+)", r"\\sqrt{\1}", s)
    s = re.sub(r"\\sqrt\s+(\w+)$", r"\\sqrt{\1}", s)
    s = re.sub(r"\\tan(-?[0-9.a-zA-Z]+)", r"\\tan{\1}", s)
    s = re.sub(r"\\tan\s+(\w+)$", r"\\tan{\1}", s)
    s = fix_a_slash_b(fix_fracs(s.replace(" ", "")))
    return re.sub(r"(\\|,|\.)+$", "", s)


# ---------------------------------------------------------------- Hendrycks MATH (RL reward fallback)
def _fix_sqrt_first_char(s: str) -> str:
    parts = s.split("\\sqrt")
    return parts[0] + "".join("\\sqrt" + (p if p[:1] == "{" or not p else "{" + p[0] + "}" + p[1:])
                              for p in parts[1:])


def hendrycks_strip(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # "\text{ " only introduces units in MATH
        s = s.split("\\text{ ")[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:  # "k = 3" -> "3"
        s = s.split("=")[1]
    s = fix_fracs(_fix_sqrt_first_char(s).replace(" ", ""))
    if s == "0.5":
        s = "\\frac{1}{2}"
    return fix_a_slash_b(s, allow_sqrt=False)


# ---------------------------------------------------------------- Minerva (Lewkowycz et al. 2022, appendix D)
MINERVA_SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]
MINERVA_REMOVED = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
    "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2",
    "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"',
    "\\dots",
]


def minerva_normalize(final_answer: str) -> str:
    s = final_answer.split("=")[-1]
    for before, after in MINERVA_SUBSTITUTIONS:
        s = s.replace(before, after)
    for expr in MINERVA_REMOVED:
        s = s.replace(expr, "")
    s = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", s)  # keep the first $...$ span
    s = re.sub(r"(\\text\{)(.*?)(\})", "\\2", s)
    s = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", s)
    s = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", s)
    s = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", s)
    s = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", s)
    s = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", s)
    s = s.replace("$", "")
    if s.replace(",", "").isdigit():  # 100,000 -> 100000
        s = s.replace(",", "")
    return s
