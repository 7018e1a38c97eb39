"""Verifiable rewards: is a completion's final answer equivalent to the reference answer?

What counts as correct
    The completion's final answer is the content of its LAST ``\\boxed{...}`` / ``\\fbox{...}`` /
    ``\\framebox{...}`` (nested braces handled, ``\\boxed 5`` accepted, a ``\\textbf{}`` around the
    whole answer and a trailing full stop dropped), else the text after its last ``####``
    (GSM8K style), else there is none. The last box is authoritative: if it is empty or
    unterminated (e.g. a truncated generation ``... \\boxed{12``) the answer is None; we do not
    fall back to an earlier box or to ``####``, since that would reward a draft the model was
    still revising. Thousands separators (``1,000``, ``1{,}000``, ``1,\\!000``) are removed only
    when the whole answer is one number, so ``(3,100)`` stays a tuple. The gold answer gets the
    same treatment when it is a full solution (contains a box or ``####``); ``$...$`` is stripped.
    Both strings are then parsed by math-verify (LaTeX, then plain expressions, with its string
    fallback) and compared with ``verify(gold, pred)``: gold FIRST, the order matters in
    math-verify (assignments such as ``x=3`` and equations are simplified on the gold side).
    Reward is 1.0 only when a parsed gold and a parsed prediction are equivalent.

Accounting (``grade`` returns ``(reward, status)``)
    "correct"   1.0   some gold/pred parse pair verifies equal.
    "wrong"     0.0   parsed, not equal (a comparison that raises counts as not equal).
    "no_answer" 0.0   nothing extractable from the completion, or math-verify cannot parse it.
    "timeout"   0.0   a parse or comparison ran past ``timeout`` seconds (gold's or pred's).
    "bad_gold"  0.0   the gold answer cannot be extracted, or math-verify cannot turn it into a
                      math object (it only returns its raw-string fallback): ``math_reward`` -> None.
    Nothing here raises on bad input: every failure is one of these statuses. We call math-verify
    with ``raise_on_error=True`` because with False a timeout is silently ``[]`` / ``False``,
    indistinguishable from a parse failure / a wrong answer; its ``TimeoutException`` derives
    from BaseException, so it is caught explicitly.

Timeouts
    math-verify arms ``signal.alarm`` (SIGALRM), which takes whole seconds and only works in the
    main thread: ``timeout`` is rounded up to an int >= 1 and applies to each parse and each
    gold/pred comparison separately. Calling ``grade`` from another thread raises RuntimeError
    (rather than silently grading without a timeout, which can hang on adversarial input).
"""
import math
import re
import threading

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException

_BOX = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_BOLD = re.compile(r"\\textbf\{(.*)\}")  # \boxed{\textbf{(073)}}: the AIME solutions' style
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # a single number with separators
_CONFIG = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _box_content(text: str, start: int) -> str | None:
    """Argument of the box command ending at ``start``: a braced group or one bare token."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        depth, j = 0, i
        while j < len(text):
            c = text[j]
            if c == "\\":
                j += 2  # skip escaped char: \{ \} \\ do not count as braces
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
            j += 1
        return None  # unterminated
    if i == start:
        return None  # "\boxed" glued to something that is neither a space nor a brace
    m = re.match(r"[^\s$]+", text[i:])
    return m.group(0).rstrip(".,;") if m else None


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` (last box, else GSM8K ``####``), or None; see module doc."""
    if not isinstance(text, str):
        return None
    boxes = list(_BOX.finditer(text))
    if boxes:
        ans = _box_content(text, boxes[-1].end())
    elif "####" in text:
        ans = text.rsplit("####", 1)[1].strip().split("\n", 1)[0]
    else:
        return None
    if ans and (bold := _BOLD.fullmatch(ans.strip())):
        ans = bold.group(1)
    ans = _strip_separators(ans.strip().rstrip(".").strip()) if ans else None  # "\boxed{104.}": a full stop
    return ans or None


def _strip_separators(ans: str) -> str:
    """'1,000' / '1{,}000' / '1,\\!000' -> '1000', only when the whole answer is one number."""
    flat = re.sub(r"\{,\}|,\\!\s*|,\\,", ",", ans).strip()
    return flat.replace(",", "") if _NUMBER.fullmatch(flat) else ans


def _clean_gold(gold) -> str | None:
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        gold = str(gold)
    if not isinstance(gold, str):
        return None
    if _BOX.search(gold) or "####" in gold:
        return extract_answer(gold)
    gold = gold.strip()
    if len(gold) >= 2 and gold[0] == gold[-1] == "$":
        gold = gold.strip("$").strip()
    return _strip_separators(gold) or None


def _parse(ans: str, timeout: int) -> list:
    """math-verify parse of one answer string; raises TimeoutException, [] on any other error."""
    try:
        return parse("\\boxed{" + ans + "}", extraction_config=_CONFIG,
                     parsing_timeout=timeout, raise_on_error=True)
    except Exception:
        return []


def grade(completion: str, gold, timeout: float = 5) -> tuple[float, str]:
    """(reward, status) for ``completion`` against the reference answer ``gold``; see module doc."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("rewards.grade uses SIGALRM timeouts (math-verify): call it from the main thread")
    secs = max(1, math.ceil(timeout))
    gold_ans = _clean_gold(gold)
    if gold_ans is None:
        return 0.0, "bad_gold"
    try:
        gold_parsed = _parse(gold_ans, secs)
    except TimeoutException:
        return 0.0, "timeout"
    if all(isinstance(g, str) for g in gold_parsed):  # [] or only math-verify's raw-string fallback
        return 0.0, "bad_gold"
    pred_ans = extract_answer(completion)
    if pred_ans is None:
        return 0.0, "no_answer"
    try:
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


def math_reward(completion: str, gold) -> float | None:
    """1.0 / 0.0, or None when the gold answer itself cannot be parsed."""
    reward, status = grade(completion, gold)
    return None if status == "bad_gold" else reward


def extract_pair(text: str) -> str | None:
    """Demo task: the first two whitespace-separated tokens if both are single digits, as 'a b'."""
    toks = text.split()[:2] if isinstance(text, str) else []
    if len(toks) == 2 and all(len(t) == 1 and t in "0123456789" for t in toks):
        return " ".join(toks)
    return None


def pair_reward(completion: str, target) -> float:
    """Demo task: 1.0 if the completion names two digits summing to ``target``, else 0.0."""
    pair = extract_pair(completion)
    try:
        return float(pair is not None and sum(map(int, pair.split())) == int(target))
    except (TypeError, ValueError, OverflowError):
        return 0.0
