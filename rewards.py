"""Verifiable rewards: is a completion's final answer equivalent to the reference answer?

What counts as correct
    The final answer is the content of the completion's LAST OUTERMOST ``\\boxed{}`` / ``\\fbox{}`` / ``\\framebox{}``
    (``\\boxed 5`` accepted; a ``\\textbf{}`` / ``\\mathbf{}`` around it and a final full stop dropped), else the text
    after its last ``####`` (GSM8K), else none; an empty or cut-off last box (``... \\boxed{12``) is no answer, never a
    fall-back to an earlier draft. Thousands separators go only when the whole answer is one number (``(3,100)`` stays a
    tuple). A gold given as a full solution is extracted the same way; ``$..$`` is stripped. math-verify parses both,
    the box content as ONE LaTeX expression, and ``verify(gold, pred)`` compares them, gold FIRST (it simplifies
    assignments such as ``x=3`` on the gold side). Reward 1.0 needs an equivalent pair and no refusal:

What the grader refuses, and why (each a reward hack that math-verify's leniency let through)
    1. A box inside the final box (``\\boxed{3 \\boxed{7}}``) makes it no answer, as neither is a clean one.
    2. An answer that does not parse as a whole is wrong, where math-verify pulled a number out of it
       (``\\sout{8} 7``, ``\\approx 7``).
    3. An answer may hold no more relations (=, <, \\le, \\approx, \\in, ...) than the gold once one leading
       ``name =`` is dropped (``x``, ``AB``, ``f(3)``: no number or text of its own), since math-verify
       keeps the right side of ``8 = 7`` or ``x = 8 = 7``.
    4. Text (``\\text``, ``\\mbox``, ``\\mathrm``, ...) may only be the whole answer (``\\text{Evelyn}``), a
       subscript, or ONE trailing unit of letters, spaces and ``.~/()`` with no hedge word (or, maybe,
       about, ...; bare trailing words, ``5 cm``, are a unit on the same terms), since math-verify drops
       trailing text (``7 \\text{ (or maybe 8)}`` was 7).
    5. Against a plain-number gold (integer, decimal, percent, degrees, money, reduced fraction, mixed or
       scientific number; a unit allowed) the answer must be such a number too, since math-verify
       evaluates the question's arithmetic (``7 + 3``, ``\\frac{20}{2}``); other golds (``2\\pi``) are free.
    6. A bare word of two or more letters is compared as a word (``\\text{True}``), never as a
       commutative product of one-letter variables (where ``rtue`` equals ``True``).

Accounting (``grade`` returns ``(reward, status)``; nothing here raises on bad input)
    "correct"   1.0   some gold/pred parse pair verifies equal.
    "wrong"     0.0   not equal (a comparison that raises counts as not equal), unparseable, or refused.
    "no_answer" 0.0   nothing extractable from the completion (none, empty, cut off, box in the box).
    "timeout"   0.0   a parse or comparison ran past ``timeout`` seconds (gold's or pred's).
    "bad_gold"  0.0   the gold is not a string or finite number, cannot be extracted, or parses to no
                      math object or an undefined one (zoo, nan; +-oo is fine): ``math_reward`` -> None.
    math-verify runs with ``raise_on_error=True``: with False a timeout is a silent ``[]`` / ``False``,
    like a parse failure or a wrong answer (its TimeoutException, a BaseException, is caught).
    ``gold_status(gold)`` -> "ok" / "bad_gold" decides all about a gold, once per problem: on top of
    ``grade``'s checks it evaluates the gold and verifies it against itself and a nearby wrong answer
    under the timeout, so a gold that would time out on every completion (``9^{9^{9}}``) is refused.
    Timeouts: math-verify arms SIGALRM (whole seconds, main thread only), so ``timeout`` is rounded up
    to an int >= 1 per parse and comparison, and another thread gets RuntimeError, not an unbounded grade.

Code tasks: ``code_program`` builds the program that sandbox.py runs from the completion's code block.
"""
import ast
import contextlib
import math
import re
import threading

from math_verify import LatexExtractionConfig, parse, verify
from math_verify import utils as mv_utils
from math_verify.errors import TimeoutException
from sympy import Number, nan, zoo

_FENCE = re.compile(r"^[ \t]*```[ \t]*(\S*).*$", re.M)  # a fence line; group 1: its language, if any
_BOX = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_BRACE = re.compile(r"\\.|[{}]", re.S)  # an escaped char or a brace
_BOLD = re.compile(r"\\(?:textbf|mathbf)\{(.*)\}")  # \boxed{\textbf{(073)}}: the AIME solutions' style
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # a single number with separators
_CONFIG = (LatexExtractionConfig(boxed_match_priority=0),)  # the box we wrap an answer in, as LaTeX
# rule 3: relation symbols; a command must end there (\le is not \left, \in is not \infty)
_RELATION = re.compile(r"[=<>≈≠≤≥]|\\(?:le|leq|leqslant|ge|geq|geqslant|lt|gt|ne|neq|not|approx|sim|simeq|"
                       r"cong|equiv|doteq|propto|in|notin|ni|to|gets|rightarrow|Rightarrow|implies|iff)(?![A-Za-z])")
# a name to drop before "=": x, AB, \angle A, x_1, f(3); no number or \text of its own (8 = 7)
_ASSIGN = re.compile(r"\s*(?=[A-Za-z\\])(?:[A-Za-z\s'{}]|\\(?!text|mbox|mathrm|hbox)[A-Za-z]+(?![A-Za-z])"
                     r"|[_^](?:\w|\{\w+\})|\([^()=]*\))+\s*(?:=|\\in(?![A-Za-z]))")
# rule 4: text commands (math-verify turns \mathrm and \text.. into \text), a unit, a hedge word
_TEXT = re.compile(r"\\(?:text|textrm|textnormal|textbf|textit|textsf|texttt|mbox|hbox|mathrm)\s*(?=\{\s*[^\s}])")
_UNIT = re.compile(r"\s*\\%\s*|(?=[^A-Za-z]*[A-Za-z])[A-Za-z .~/()]*")  # \%, or some letter (linear time)
_UNIT_POWER = re.compile(r"(?:\^\s*(?:\d|\{\s*\d\s*\}))?")  # cm^2, cm^{3}
_HEDGE = re.compile(r"\b(?:or|and|not|no|maybe|perhaps|possibly|probably|likely|about|around|approx|"
                    r"approximately|roughly|nearly|almost|least|most|than|either|guess|unsure)\b", re.I)
# rule 5: a plain number (7, .5, 3\times10^{8}, 4\frac{2}{3}, 3/4; fractions short enough for int()) once
# spacing, \left( \right), \$, %, degree sign and separators are gone
_PLAIN = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:(?:\\times|\\cdot)10\^(?:\d|\{[+-]?\d+\}))?"
                    r"|[+-]?\d*(?P<frac>\\[dt]?frac(?P<a>\d|\{-?\d{1,99}\})(?P<b>\d|\{\d{1,99}\}))"
                    r"|[+-]?(?P<c>\d{1,99})/(?P<d>\d{1,99})")
_DECOR = re.compile(r"\s+|~|\\[!,;: ]|\\q?quad|\\displaystyle|\\(?:left|right)(?![A-Za-z])|\\(?:text|mbox)\{\s*\}"
                    r"|\\\$|\$|\{,\}|\\%$|%$|\^\s*\\circ$|\^\s*\{\s*\\circ\s*\}$|°$|\\degree$")
_WORD = re.compile(r"[A-Za-z]{2,}")  # rule 6


def _box_content(text: str, start: int) -> tuple[str | None, int]:
    """Argument of the box command ending at ``start`` (a braced group or one bare token) and
    where it ends; None when it is missing or unterminated (then it runs to the end of ``text``)."""
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
    return (ans and _strip_separators(ans.strip().rstrip(".").strip())) or None  # "\boxed{104.}": a full stop


def _strip_separators(ans: str) -> str:
    """'1,000' / '1{,}000' / '1,\\!000' -> '1000', only when the whole answer is one number."""
    flat = re.sub(r"\{,\}|,\\!\s*|,\\,", ",", ans).strip()
    return flat.replace(",", "") if _NUMBER.fullmatch(flat) else ans


def _clean_gold(gold) -> str | None:
    if isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold):
        gold = str(gold)
    if not isinstance(gold, str) or gold.strip().lstrip("+-") in ("nan", "inf"):
        return None  # bool, None, dict, list, nan, inf (also as str(float), as a caller may pass it)
    if _BOX.search(gold) or "####" in gold:
        return extract_answer(gold)
    if len(gold := gold.strip()) >= 2 and gold[0] == gold[-1] == "$":
        gold = gold.strip("$").strip()
    return _strip_separators(gold) or None


def _without_unit(ans: str) -> str | None:
    """Rule 4: ``ans`` without its trailing unit, the content of a whole-answer text, or None
    when it holds text anywhere else. Text in a subscript (``\\lambda_{\\text{red}}``) is a name."""
    texts = [m for m in _TEXT.finditer(ans) if not ans[: m.start()].rstrip().endswith(("_", "_{"))]
    if not texts:  # bare trailing words ("5 cm", "18 apples"), found in the reversed string (linear time)
        tail = re.match(r"[A-Za-z .]*", ans[::-1]).group()[::-1]
        head = ans[: len(ans) - len(tail)]
        unit = _UNIT.fullmatch(tail) and not _HEDGE.search(tail)
        return head if head.strip() and not head.endswith("\\") and unit else ans  # not 2\pi
    content, end = _box_content(ans, texts[-1].end())
    if len(texts) > 1 or content is None or not _UNIT_POWER.fullmatch(ans[end:].strip()):
        return None
    head = ans[: texts[-1].start()]  # unstripped: "7 \ \text{cm}" keeps its "\ "
    if not head.strip():
        return content.strip()  # the whole answer is text: \text{Evelyn}
    return head if _UNIT.fullmatch(content) and not _HEDGE.search(content) else None


def _plain_number(ans: str | None) -> bool:
    """Rule 5: ``ans`` (units already gone; None is no number) is one number, a fraction only in lowest terms."""
    flat = _DECOR.sub("", ans or "")
    flat = flat.replace(",", "") if _NUMBER.fullmatch(flat) else flat
    while flat[:1] + flat[-1:] in ("()", "{}"):  # {18}, AIME's \textbf{(073)}; a tuple keeps its comma
        flat = flat[1:-1]
    m = _PLAIN.fullmatch(flat)
    if not m or not (m["frac"] or m["c"]):
        return bool(m)
    a, b = (int(x.strip("{}")) for x in ((m["a"], m["b"]) if m["frac"] else (m["c"], m["d"])))
    return b > 1 and math.gcd(a, b) == 1


def _refuse(pred: str, gold: str) -> str | None:
    """Rules 3-5: the prediction to hand to math-verify, or None when it is refused."""
    n_gold, m = len(_RELATION.findall(gold)), _ASSIGN.match(pred)
    if len(_RELATION.findall(pred)) > n_gold and m and len(_RELATION.findall(m.group())) == 1:
        pred = pred[m.end() :]  # "x = 5" against "5": the assignment is not a second answer
    core = _without_unit(pred)
    refused = core is None or (_plain_number(_without_unit(gold)) and not _plain_number(core))
    return None if refused or len(_RELATION.findall(pred)) > n_gold else pred


def _parse(ans: str, timeout: int) -> list:
    """math-verify parse of one answer string; raises TimeoutException, [] on any other error.
    ``first_match``: if the whole box does not parse, do not try a number found inside it (rule 2)."""
    # rule 6; "~" is a LaTeX non-breaking space, which latex2sympy fails on after \frac{3}{4}
    ans = ("\\text{" + ans + "}" if _WORD.fullmatch(ans) else ans).replace("~", " ")
    try:
        return parse("\\boxed{" + ans + "}", extraction_config=_CONFIG, extraction_mode="first_match",
                     parsing_timeout=timeout, raise_on_error=True)
    except Exception:
        return []


def _gold_objects(gold, secs: int) -> tuple[str | None, list]:
    """The cleaned gold and its parsed math objects ([] when it is a bad gold); raises TimeoutException."""
    objs = [g for g in _parse(gold_ans, secs) if not isinstance(g, str)] if (gold_ans := _clean_gold(gold)) else []
    # [] also when only math-verify's raw-string fallback came back, or for 1/0, 0/0 (equal to nothing)
    return gold_ans, ([] if any(g.has(nan, zoo) for g in objs) else objs)


def _alarm_seconds(timeout: float) -> int:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("rewards uses SIGALRM timeouts (math-verify): call it from the main thread")
    return max(1, math.ceil(timeout))


def grade(completion: str, gold, timeout: float = 5) -> tuple[float, str]:
    """(reward, status) for ``completion`` against the reference answer ``gold``; see module doc."""
    secs = _alarm_seconds(timeout)
    try:
        gold_ans, gold_parsed = _gold_objects(gold, secs)
        if not gold_parsed:
            return 0.0, "bad_gold"
        if (pred_ans := extract_answer(completion)) is None:
            return 0.0, "no_answer"
        if (pred_ans := _refuse(pred_ans, gold_ans)) is None:
            return 0.0, "wrong"
        pred_parsed = _parse(pred_ans, secs)
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
    """"ok" or "bad_gold": everything about a gold answer, decided once per problem (see module doc).
    Each step runs under ``timeout``; a gold that times out would cost that on every completion."""
    secs = _alarm_seconds(timeout)
    try:
        _, objs = _gold_objects(gold, secs)
        for g in objs:  # the gold evaluated, and a wrong answer of its shape (each number plus one)
            value, nearby = mv_utils.timeout(secs)(lambda: (g.doit(), g.xreplace({n: n + 1 for n in g.atoms(Number)})))()
            if value.has(nan, zoo) or not verify(g, g, timeout_seconds=secs, raise_on_error=True):
                return "bad_gold"  # \infty - \infty: undefined once evaluated
            with contextlib.suppress(Exception):  # only its cost matters: an error is "not equal" in grade, as here
                verify(g, nearby, timeout_seconds=secs, raise_on_error=True)
    except (TimeoutException, Exception):  # TimeoutException is a BaseException
        return "bad_gold"  # it would time out on every completion, or it is no value at all
    return "ok" if objs else "bad_gold"


def math_reward(completion: str, gold) -> float | None:
    """1.0 / 0.0, or None when the gold answer itself cannot be parsed."""
    reward, status = grade(completion, gold)
    return None if status == "bad_gold" else reward


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
    """The program in a completion: its LAST closed block fenced by ```python, ```py, ```python3 (any case) or a
    bare ``` (fences start a line; other languages are skipped). None ("no_code") when there is none, or when the
    completion ends inside an open block (cut off, as a cut-off box is no answer): no fall-back to an earlier one."""
    code, lang, start = None, None, 0
    for m in _FENCE.finditer(text):
        if lang is None:
            lang, start = m.group(1).lower(), m.end() + 1
        elif not m.group(1):  # only a bare fence closes a block: "```python" inside one is its content
            code, lang = text[start : m.start()] if lang in ("", "py", "python", "python3") else code, None
    return None if lang is not None else code


def code_program(completion: str, prefix: str, suffix: str) -> str | None:
    """``prefix``, the completion's code and ``suffix``, one after another on their own lines; None: no code."""
    return None if (code := extract_code(completion)) is None else f"{prefix}\n{code}\n{suffix}"


def normalise_code(code: str) -> str | None:
    """A canonical form for counting distinct programs: the AST dump (no comments, no layout) minus bare strings
    (docstrings); None if it does not parse. Names stay: a rename is another program (merging needs scopes)."""
    try:
        tree = ast.parse(code)
        for node in ast.walk(tree):
            for field, value in ast.iter_fields(node):
                if isinstance(value, list):  # statement lists; a bare string is only ever a statement
                    setattr(node, field, [s for s in value if not (isinstance(s, ast.Expr)
                                          and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str))])
        return ast.dump(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a null byte; the others: too deep
        return None
