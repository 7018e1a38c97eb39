"""Verifiable rewards: is a completion's final answer equivalent to the gold answer? Rules: docs/grading.md.

The answer is the LAST OUTERMOST ``\\boxed{}`` (``\\fbox``, ``\\framebox``), else the text after the last
``####``; an empty or cut-off last box is none. A plain-number gold is graded here (one number of the same
value, allow-listed units ``_UNITS``), other golds by math-verify past rules 1-6 (in the code). ``grade`` ->
(reward, status), never raises: "correct" 1.0, else 0.0 and "wrong", "no_answer", "timeout" (SIGALRM: main
thread) or "bad_gold". ``gold_status``: "ok" / "bad_gold", once per problem. ``code_program``: sandbox.py's
program from a completion's code block."""
import ast
import contextlib
import math
import re
import threading
from fractions import Fraction

from math_verify import LatexExtractionConfig, parse, utils as mv_utils, verify
from math_verify.errors import TimeoutException
from sympy import Number, nan, zoo

_FENCE = re.compile(r"^[ \t]*```[ \t]*(\S*).*$", re.M)  # a fence line; group 1: its language, if any
_BOX = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_BRACE = re.compile(r"\\.|[{}]", re.S)  # an escaped char or a brace
_BOLD = re.compile(r"\\(?:textbf|mathbf)\{(.*)\}")  # \boxed{\textbf{(073)}}: the AIME solutions' style
_CONFIG = (LatexExtractionConfig(boxed_match_priority=0),)  # the box we wrap an answer in, as LaTeX
_TIDY = re.compile(r"\\(?:text)?color\s*\{[^{}]*\}|\\displaystyle(?![A-Za-z])")  # dropped from every answer
_RELATION = re.compile(  # rule 3: relation symbols (commands end there: \le is not \left, \in is not \infty)
    r"[=<>≈≠≤≥]|\\(?:le|leq|leqslant|ge|geq|geqslant|lt|gt|ne|neq|not|approx|sim|simeq|cong|equiv|"
    r"doteq|propto|in|notin|ni|to|gets|rightarrow|Rightarrow|implies|iff)(?![A-Za-z])")
_SAME = dict(zip(r"≤ \leq \leqslant ≥ \geq \geqslant ≠ \neq ≈ \lt \gt \Rightarrow".split(),
                 r"\le \le \le \ge \ge \ge \ne \ne \approx < > \implies".split()))  # one spelling each
_NAME = (r"[A-Za-z'{}]|_(?:\w|\{\w+\})|\([\w ,.+-]*\)|\\(?:angle|overline|(?i:(?:var)?(?:alpha|beta|gamma"
         r"|delta|epsilon|zeta|eta|theta|iota|kappa|lambda|mu|nu|xi|pi|rho|sigma|tau|upsilon|phi|chi|psi"
         r"|omega)))(?![A-Za-z])")  # a name to drop before "=" or \in: x, AB, \angle A, \theta, x_1, f(3), x'
_ASSIGN = re.compile(rf"\s*(?=[A-Za-z\\])(?:(?:{_NAME})\s*)+(?:=|\\in(?![A-Za-z]))")  # token by token: linear
_TEXT = re.compile(  # rule 4: text commands (math-verify turns \mathrm and \text.. into \text)
    r"\\(?:text|textrm|textnormal|textbf|textit|textsf|texttt|mbox|hbox|mathrm)\s*(?=\{\s*[^\s}])")
_UNITS = frozenset("""dollar buck cent penny pennies euro yen rupee usd second sec minute min hour hr day week
    month year yr decade century centuries acre cc mm cm km meter metre millimeter millimetre centimeter
    centimetre kilometer kilometre inch in foot feet ft yard yd mile mi mg kg gram kilogram milligram lb pound
    oz ounce ton tonne ml liter litre milliliter millilitre gallon gal quart qt pint pt cup tablespoon tbsp
    teaspoon tsp square sq cubic per mph kph degree deg radian rad celsius fahrenheit calorie cal kcal percent
    percentage point unit m s h g l L C F""".split())  # rule 4: the unit allow-list (singular forms)
_UNIT = re.compile(  # words, ^2, / (linear)
    r"(?:[A-Za-z]+(?![A-Za-z])(?: ?\^(?:[23]|\{[23]\}))?|[\s()./-]|\\%|%)*")
_UNWRAP = re.compile(r"\\(?:text\w*|mbox|hbox|mathrm|mathbf|boldsymbol)\s*\{([^{}]*)\}")  # unwraps \text{..}
_SYMBOL = re.compile(  # rule 5 (plain numbers): currency, %, degree, feet/inch marks, spacing: one space each
    r"\\[$%,;: ]|[$%~€£¥¢°′″'\"]|\\(?:q?quad|[a-z]*space|left|right|degree|euro|pounds|circ)"
    r"(?![A-Za-z])|\^\s*(?:\\circ|\\prime|\{\s*(?:\\circ|\\prime(?:\s*\\prime)?)\s*\})")
_INT = r"\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+|\d+"  # 1,000 / 1 000 (from 1\,000) / 1000
_VALUE = re.compile(  # re.A: ASCII digits only
    r"(?P<s>[+-]?) ?(?:(?:(?P<w>\d+) ?)?\\[dt]?frac ?(?P<a>\d|\{ ?-?\d+ ?\}) ?(?P<b>\d|\{ ?\d+ ?\})"
    rf"|(?:(?P<x>\d+) )?(?P<c>\d+) ?/ ?(?P<d>\d+)|(?P<n>(?:{_INT})(?:\.\d+)?|\.\d+)(?: ?(?:\\times|\\cdot|×)"
    r" ?10 ?\^ ?(?P<e>\d|\{ ?[+-]?\d{1,3} ?\})|[eE](?P<f>[+-]?\d{1,3}))?) ?(?P<u>.*)", re.A)


def _box_content(text: str, start: int) -> tuple[str | None, int]:
    """The argument at ``start`` (a braced group or one bare token) and its end; None: missing or cut off."""
    i = len(text) - len(text[start:].lstrip(" \t"))
    if text[i : i + 1] == "{":
        depth = 0
        for m in _BRACE.finditer(text, i):  # an escaped char (\{ \} \\) is one token, not a brace
            depth += {"{": 1, "}": -1}.get(m.group(), 0)
            if depth == 0:
                return text[i + 1 : m.start()], m.end()
        return None, len(text)  # unterminated
    if i == start:
        return None, start  # "\boxed" glued to something that is neither a space nor a brace
    m = re.match(r"[^\s$]+", text[i:])
    return (m.group(0).rstrip(".,;"), i + m.end()) if m else (None, i)


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` (last outermost box, else GSM8K ``####``), or None; see module doc."""
    if not isinstance(text, str):
        return None
    ans, end = None, 0
    for m in _BOX.finditer(text):
        if m.start() >= end:  # a box that starts inside the previous box is nested in it
            ans, end = _box_content(text, m.end())
    if not end:  # no box
        ans = text.rsplit("####", 1)[1].strip().split("\n", 1)[0] if "####" in text else None
    elif ans and _BOX.search(ans):
        return None  # rule 1: a box inside the final box
    if ans and (bold := _BOLD.fullmatch(ans.strip())):
        ans = bold.group(1)
    return (ans and _tidy(ans.strip().rstrip(".").strip())) or None  # "\boxed{104.}": a full stop


def _tidy(ans: str) -> str:
    """Unicode minus -> '-', no \\color or \\displaystyle; '1,000', '1{,}000', '1,\\!000' alone -> '1000'."""
    ans = _TIDY.sub("", ans.replace("−", "-")).strip()
    flat = re.sub(r"\{,\}|,\\!\s*|,\\,", ",", ans).strip()
    return flat.replace(",", "") if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", flat) else ans


def _clean_gold(gold) -> str | None:
    gold = (str(gold) if isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold)
            else gold)
    if not isinstance(gold, str) or gold.strip().lstrip("+-") in ("nan", "inf"):
        return None  # bool, None, dict, list, nan, inf (also as str(float), as a caller may pass it)
    if _BOX.search(gold) or "####" in gold:
        return extract_answer(gold)
    if len(gold := gold.strip()) >= 2 and gold[0] == gold[-1] == "$":
        gold = gold.strip("$").strip()
    return _tidy(gold) or None


def _is_unit(text: str) -> bool:
    """Rule 4: ``text`` is empty or an allow-listed unit (a plural too; ``per`` or ``square`` not last)."""
    words = ([w if len(w) == 1 else w.lower() for w in re.findall(r"[A-Za-z]+", text)]
             if _UNIT.fullmatch(text) else [""])
    return all(w in _UNITS or (w[-1:] == "s" and w[:-1] in _UNITS) or (w[-2:] == "es" and w[:-2] in _UNITS)
               for w in words) and not (words and words[-1] in ("per", "square", "sq", "cubic"))


def _text_ok(ans: str) -> bool:
    """Rule 4: text is the whole answer, a name's subscript (``\\lambda_{\\text{red}}``) or one final unit."""
    texts = [m for m in _TEXT.finditer(ans) if not ans[: m.start()].rstrip().endswith(("_", "_{"))]
    if not texts:  # bare trailing words after a number ("5 cm"; not "5 apples"), scanned reversed (linear)
        tail = re.match(r"[A-Za-z .]*", ans[::-1]).group()[::-1]
        word = re.search(r"\s[A-Za-z]{2}", tail)  # a word, not a variable ("7.6 Z", "1+\sqrt{3} i")
        return _is_unit(tail) or not (word and re.search(r"[\d}]\s*$", ans[: len(ans) - len(tail)]))
    content, end = _box_content(ans, texts[-1].end())
    if len(texts) > 1 or content is None or not re.fullmatch(r"(?:\^\s*(?:\d|\{\s*\d\s*\}))?",
                                                             ans[end:].strip()):
        return False
    return not ans[: texts[-1].start()].strip() or _is_unit(content)  # \text{Evelyn}; 5 \text{cm}


def _number(ans: str) -> tuple[Fraction, int] | None:
    """A plain number's value and decimal places (-1: a fraction), or None when ``ans`` is no plain number."""
    s = ans.replace("{,}", ",").replace("\\!", "")  # 10,\!080
    for _ in range(3):  # \text{\$70,000}, \mathbf{18}: unwrapped, three deep at most
        s = _UNWRAP.sub(r" \1 ", s)
    s = " ".join(_SYMBOL.sub(" ", s).split())
    while s[:1] + s[-1:] == "{}" or (s[:1] + s[-1:] == "()" and "," not in s):
        s = s[1:-1].strip()  # {18}, AIME's (073); not (3,100)
    s = re.sub(r"(?i)^(?:the )?(?:final )?answer(?: is)?:? ?", "", s)  # \text{Answer: } 5
    if not (m := _VALUE.fullmatch(s)) or not _is_unit(m["u"]):
        return None
    try:
        if m["n"]:  # a decimal, maybe in scientific notation (its mantissa in [1, 10))
            n, e = (Fraction(m["n"].replace(",", "").replace(" ", "")),
                    int((m["e"] or m["f"] or "0").strip("{} ")))
            value, places, ok = (n * Fraction(10) ** e, max(0, len(m["n"].partition(".")[2]) - e),
                                 e == 0 or 1 <= n < 10)
        else:  # a fraction in lowest terms; a mixed number's fraction is proper
            whole, (a, b) = m["w"] or m["x"], (int(x.strip("{} "))
                                               for x in (m["a"] or m["c"], m["b"] or m["d"]))
            value, places = int(whole or 0) + Fraction(a, b), -1
            ok = b > 1 and math.gcd(a, b) == 1 and (not whole or 0 < a < b)
    except (ValueError, ZeroDivisionError):  # over 4300 digits, 1/0
        return None
    return ((-value if m["s"] == "-" else value), places) if ok else None


def _refuse(pred: str, gold: str, numeric: bool) -> str | None:
    """Rules 3-4: the prediction to compare (a leading assignment dropped), or None when it is refused."""
    relations = lambda ans: [_SAME.get(r, r) for r in _RELATION.findall(ans)]  # noqa: E731
    gold_relations = relations(gold)
    if (m := _ASSIGN.match(pred)) and len(relations(pred)) > len(gold_relations):
        pred = pred[m.end() :]  # "x = 5" against "5": the assignment is not a second answer
    if relations(pred) not in ([], gold_relations):
        return None  # 8 = 7, x \approx 5 against x = 5
    return pred if numeric or _text_ok(pred) else None  # a plain number is checked by _number


def _parse(ans: str, timeout: int) -> list:
    """math-verify parse of an answer; raises TimeoutException, [] on other errors. ``first_match``: no number
    from a box that fails to parse (rule 2). Rule 6; "~" (a space) fails latex2sympy after \\frac34."""
    ans = ("\\text{" + ans + "}" if re.fullmatch(r"[A-Za-z]{2,}", ans) else ans).replace("~", " ")
    try:
        return parse("\\boxed{" + ans + "}", extraction_config=_CONFIG, extraction_mode="first_match",
                     parsing_timeout=timeout, raise_on_error=True)
    except Exception:
        return []


def _gold(gold, secs: int) -> tuple[str | None, tuple | None, list]:
    """Cleaned gold, its value if a plain number, else its math objects ([] both: bad gold); may time out."""
    gold_ans = mv_utils.timeout(secs)(_clean_gold)(gold)
    if not gold_ans or (value := mv_utils.timeout(secs)(_number)(gold_ans)):
        return gold_ans, (value if gold_ans else None), []
    objs = [g for g in _parse(gold_ans, secs) if not isinstance(g, str)]  # [] too: only a raw-string fallback
    return gold_ans, None, ([] if any(g.has(nan, zoo) for g in objs) else objs)


def _alarm_seconds(timeout: float) -> int:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("rewards uses SIGALRM timeouts (math-verify): call it from the main thread")
    return max(1, math.ceil(timeout))


def _answer(completion, gold_ans: str, value: tuple | None) -> tuple[str, str | None]:
    """(status, prediction for math-verify): extraction, refusals and, for a plain-number gold, the grade."""
    if (pred := extract_answer(completion)) is None:
        return "no_answer", None
    if (pred := _refuse(pred, gold_ans, value is not None)) is None or value is None:
        return ("wrong" if pred is None else "math-verify"), pred
    got = _number(pred)
    (x, fx), (d, places) = sorted((value, got), key=lambda v: v[1]) if got else ((0, 0), (1, 0))
    # (fraction, decimal): equal, or a decimal of 3+ places, the fraction rounded to them (0.333 for 1/3)
    return ("correct" if x == d or (fx == -1 and places >= 3 and round(x, places) == d) else "wrong"), None


def grade(completion: str, gold, timeout: float = 5) -> tuple[float, str]:
    """(reward, status) for ``completion`` against the reference answer ``gold``; see module doc."""
    secs = _alarm_seconds(timeout)
    try:
        gold_ans, value, gold_parsed = _gold(gold, secs)
        if not (value or gold_parsed):
            return 0.0, "bad_gold"
        status, pred = mv_utils.timeout(secs)(_answer)(completion, gold_ans, value)  # bounded, however long
        if status != "math-verify":
            return float(status == "correct"), status
        pred_parsed = _parse(pred, secs)
    except TimeoutException:
        return 0.0, "timeout"
    if not pred_parsed:
        return 0.0, "no_answer"
    timed_out = False
    for g in gold_parsed:  # one verify per pair: an error or timeout in one must not hide the rest
        for p in pred_parsed:
            try:
                if verify(g, p, timeout_seconds=secs, raise_on_error=True):
                    return 1.0, "correct"
            except TimeoutException:
                timed_out = True
            except Exception:
                pass
    return 0.0, ("timeout" if timed_out else "wrong")


def gold_status(gold, timeout: float = 5) -> str:
    """"ok" or "bad_gold", decided once per problem (module doc); each step runs under ``timeout``."""
    secs = _alarm_seconds(timeout)
    try:
        gold_ans, value, objs = _gold(gold, secs)
        if not (value or objs) or grade("\\boxed{" + gold_ans + "}", gold, timeout) != (1.0, "correct"):
            return "bad_gold"  # no value, or no answer can match it (its own text does not)
        for g in objs:  # the gold evaluated, and a wrong answer of its shape (each number plus one)
            done, nearby = mv_utils.timeout(secs)(
                lambda: (g.doit(), g.xreplace({n: n + 1 for n in g.atoms(Number)})))()
            if done.has(nan, zoo) or not verify(g, g, timeout_seconds=secs, raise_on_error=True):
                return "bad_gold"  # \infty - \infty: undefined once evaluated
            with contextlib.suppress(Exception):  # for its cost only: an error is "not equal" in grade too
                verify(g, nearby, timeout_seconds=secs, raise_on_error=True)
    except (TimeoutException, Exception):  # TimeoutException is a BaseException
        return "bad_gold"  # it would time out on every completion, or it is no value at all
    return "ok"


def extract_pair(text: str) -> str | None:
    """Demo task: the first two whitespace-separated tokens if both are single digits, as 'a b'."""
    toks = text.split()[:2] if isinstance(text, str) else []
    return " ".join(toks) if len(toks) == 2 and all(len(t) == 1 and t in "0123456789" for t in toks) else None


def pair_reward(completion: str, target) -> float:
    """Demo task: 1.0 if the completion names two digits summing to ``target``, else 0.0."""
    pair = extract_pair(completion)
    try:
        return float(pair is not None and sum(map(int, pair.split())) == int(target))
    except (TypeError, ValueError, OverflowError):
        return 0.0


def extract_code(text: str) -> str | None:
    """A completion's program: its LAST closed block fenced by ```python, ```py, ```python3 (any case) or a
    bare ``` (fences start a line; other languages are skipped). None ("no_code") if there is none or it ends
    inside an open block (cut off, as a cut-off box is no answer): no fall-back to an earlier one."""
    code, lang, start = None, None, 0
    for m in _FENCE.finditer(text):
        if lang is None:
            lang, start = m.group(1).lower(), m.end() + 1
        elif not m.group(1):  # only a bare fence closes a block: "```python" inside one is its content
            code, lang = text[start : m.start()] if lang in ("", "py", "python", "python3") else code, None
    return None if lang is not None else code


def code_program(completion: str, prefix: str, suffix: str) -> str | None:
    """``prefix``, the completion's code and ``suffix``, in turn on their own lines; None: no code."""
    return None if (code := extract_code(completion)) is None else f"{prefix}\n{code}\n{suffix}"


def normalise_code(code: str) -> str | None:
    """Canonical form to count distinct programs: the AST dump (no comments or layout) minus bare strings
    (docstrings); None if unparseable. Names stay: a rename is another program (merging needs scopes)."""
    try:
        tree = ast.parse(code)
        for node in ast.walk(tree):
            for field, value in ast.iter_fields(node):
                if isinstance(value, list):  # statement lists; a bare string is only ever a statement
                    setattr(node, field, [s for s in value if not (isinstance(s, ast.Expr)
                            and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str))])
        return ast.dump(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: null byte; others: too deep
        return None
