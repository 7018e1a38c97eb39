"""rewards.py: answer extraction, math-verify grading and its accounting, the demo pair task,
and an end-to-end agreement check on the real MATH-500 and GSM8K reference solutions."""
import json
import signal
import threading
import time

import math_verify
import math_verify.grader
import math_verify.parser
import pytest

from rewards import extract_answer, extract_pair, grade, math_reward, pair_reward

# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize("text, expected", [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{{a}+{b}}", "{a}+{b}"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),                      # escaped braces do not count
    (r"first \boxed{3}, on reflection \boxed{4}.", "4"),    # last box wins
    (r"\boxed 5", "5"),
    (r"the answer is $\boxed 5$.", "5"),
    (r"\boxed {7}", "7"),
    (r"\fbox{12}", "12"),
    (r"\framebox{204}", "204"),
    (r"$d = \boxed{\textbf{(073)}}.$", "(073)"),                # AIME solutions' style
    (r"\boxed{104.}", "104"),                                # a full stop inside the box
    (r"\boxed{1,000}", "1000"),                             # one number: separators removed
    (r"\boxed{(3,100)}", "(3,100)"),                        # a tuple keeps its comma
    ("She pays 2 * 500 = 1000.\n#### 1,000", "1000"),
    ("#### 1,450,000", "1450000"),
    ("#### 5\nsome trailing text", "5"),
    ("a #### 1 b\n#### 2", "2"),                            # last #### wins
    (r"#### 9 but \boxed{8}", "8"),                         # a box beats ####
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [
    r"\boxed{}", r"\boxed{  }", r"\boxed{12", r"the answer is \boxed",
    r"\boxed{3} and then \boxed{",     # unterminated LAST box: no fallback to the earlier one
    r"\boxed{3} and then \boxed{}",    # empty last box: likewise
    "####", "####   \n", "no answer here", "", None,
])
def test_extract_answer_none(text):
    assert extract_answer(text) is None


# ---------------------------------------------------------------- grading


@pytest.mark.parametrize("completion, gold", [
    (r"\boxed{\frac{1}{2}}", r"\dfrac{1}{2}"),
    (r"\boxed{\dfrac{1}{2}}", r"\frac12"),
    (r"\boxed{0.5}", r"\frac12"),
    (r"\boxed{3.0}", "3"),
    (r"\boxed{{a}+{b}}", "a+b"),
    (r"\boxed 5", "5"),
    (r"\fbox{7}", "7"),
    ("#### 1,000", "1000"),
    (r"\boxed{1000}", "1,000"),
    (r"\boxed{10080}", r"10,\!080"),
    (r"\boxed{[1, 2)}", "[1,2)"),
    (r"\boxed{(3, \pi/2)}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{(3, \frac{\pi}{2})}", r"(3, \frac{\pi}{2})"),
    (r"\boxed{\{2, 1\}}", r"\{1,2\}"),
    (r"\boxed{5}", "x=5"),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}"),
    (r"\boxed{3}", "$3$"),                                  # gold wrapped in $...$
    (r"\boxed{3}", r"so the answer is $\boxed{3}$."),       # gold given as a full solution
    (r"\boxed{18}", "Janet makes 9 * 2 = 18\n#### 18"),
    (r"wrong: \boxed{4}, fixed: \boxed{3}", "3"),
])
def test_grade_correct(completion, gold):
    assert grade(completion, gold) == (1.0, "correct")
    assert math_reward(completion, gold) == 1.0


@pytest.mark.parametrize("completion, gold", [
    (r"\boxed{6}", "7"),
    (r"\boxed{3}, on reflection \boxed{4}", "3"),           # only the last box counts
    (r"\boxed{(1, 2]}", "[1,2)"),
    (r"\boxed{(2, 3)}", "(3, 2)"),                          # tuples are ordered
    (r"\boxed{(3,100)}", "3100"),
    (r"\boxed{\text{Bob}}", r"\text{Evelyn}"),
])
def test_grade_wrong(completion, gold):
    assert grade(completion, gold) == (0.0, "wrong")
    assert math_reward(completion, gold) == 0.0


@pytest.mark.parametrize("completion", [
    r"\boxed{}", r"\boxed{12", r"\boxed{12} then \boxed{", "12", r"$\frac{1}{2}$", "", None,
])
def test_grade_no_answer(completion):
    assert grade(completion, "12") == (0.0, "no_answer")
    assert math_reward(completion, "12") == 0.0


@pytest.mark.parametrize("gold", [r"\frac{", r"\begin{", "", "   ", "$$", r"\boxed{}", r"\boxed{12", "####", None])
def test_bad_gold(gold):
    assert grade(r"\boxed{1}", gold) == (0.0, "bad_gold")
    assert grade(r"\frac{", gold) == (0.0, "bad_gold")     # not a silent 1 when both are garbage
    assert math_reward(r"\boxed{1}", gold) is None


def test_unparseable_gold_really_is_unparseable():
    # r"\frac{" is extractable, but math-verify yields only its raw-string fallback, no math object
    parsed = math_verify.parse("\\boxed{\\frac{}")
    assert parsed and all(isinstance(x, str) for x in parsed)


def test_numeric_gold_types():
    assert grade(r"\boxed{27}", 27.0) == (1.0, "correct")   # amc23 stores answers as JSON numbers
    assert grade(r"\boxed{27}", 27) == (1.0, "correct")


# ---------------------------------------------------------------- timeouts and errors


def _sleepy(*args, **kwargs):
    time.sleep(30)  # interrupted by math-verify's SIGALRM after `timeout` seconds


def test_comparison_timeout_is_a_counted_zero(monkeypatch):
    handler = signal.getsignal(signal.SIGALRM)
    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", _sleepy)
    # "2.0" vs "2": the raw-string fallbacks differ, so only the (stalled) sympy comparison can decide
    start = time.perf_counter()
    assert grade(r"\boxed{2.0}", "2", timeout=1) == (0.0, "timeout")  # real alarm, not a mock raise
    assert time.perf_counter() - start < 10
    assert signal.getsignal(signal.SIGALRM) == handler and signal.alarm(0) == 0  # nothing left armed


def test_parse_timeout_is_a_counted_zero(monkeypatch):
    real = math_verify.parser.extract_target_from_pred

    def slow_on_marker(pred, *args, **kwargs):
        if "999" in pred:
            _sleepy()
        return real(pred, *args, **kwargs)

    monkeypatch.setattr(math_verify.parser, "extract_target_from_pred", slow_on_marker)
    assert grade(r"\boxed{999}", "2", timeout=0.2) == (0.0, "timeout")  # prediction parse
    assert grade(r"\boxed{2}", "999", timeout=1) == (0.0, "timeout")    # gold parse
    assert grade(r"\boxed{2}", "2", timeout=1) == (1.0, "correct")


def test_errors_are_counted_not_raised(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("sympy blew up")

    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", boom)
    assert grade(r"\boxed{2.0}", "2") == (0.0, "wrong")
    monkeypatch.setattr(math_verify.parser, "extract_target_from_pred", boom)
    assert grade(r"\boxed{2}", "2") == (0.0, "bad_gold")


def test_grade_refuses_other_threads():
    errors = []

    def work():
        try:
            grade(r"\boxed{2}", "2")
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])


# ---------------------------------------------------------------- demo pair task


@pytest.mark.parametrize("text, expected", [
    ("3 4", "3 4"), ("  3\n 4 and more", "3 4"), ("0 9", "0 9"), ("3 4 5", "3 4"),
    ("34", None), ("3", None), ("3 10", None), ("3, 4", None), ("a b", None), ("3 ٤", None),
    ("-1 8", None), ("", None), (None, None),
])
def test_extract_pair(text, expected):
    assert extract_pair(text) == expected


@pytest.mark.parametrize("text, target, expected", [
    ("3 4", 7, 1.0), ("3 4", "7", 1.0), ("9 9", "18", 1.0), ("3 4", 8, 0.0), ("34", 7, 0.0),
    ("3 4", "seven", 0.0), ("3 4", None, 0.0), ("3 4", float("inf"), 0.0), (None, 7, 0.0),
])
def test_pair_reward(text, target, expected):
    assert pair_reward(text, target) == expected


# ---------------------------------------------------------------- real data


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_math500_reference_solutions_agree(shared_data):
    rows = _rows(shared_data / "math500" / "test.jsonl")
    assert len(rows) == 500
    statuses = [grade(r["solution"], r["answer"])[1] for r in rows]
    ok = statuses.count("correct")
    misses = [(r["answer"], extract_answer(r["solution"]), s) for r, s in zip(rows, statuses) if s != "correct"]
    assert ok / len(rows) >= 0.995, f"MATH-500 agreement {ok}/{len(rows)} = {ok / len(rows):.2%}; misses: {misses[:10]}"
    # negative control: another problem's answer must (almost) never be accepted
    shifted = sum(grade(r["solution"], rows[(i + 1) % len(rows)]["answer"])[0] for i, r in enumerate(rows))
    assert shifted / len(rows) < 0.02, f"MATH-500 accepts {shifted}/{len(rows)} mismatched answers"


def test_gsm8k_reference_solutions_agree(shared_data):
    rows = _rows(shared_data / "gsm8k" / "test.jsonl")
    assert len(rows) == 1319
    golds = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]  # raw, e.g. "1,450,000"
    statuses = [grade(r["answer"], g)[1] for r, g in zip(rows, golds)]
    ok = statuses.count("correct")
    misses = [(g, extract_answer(r["answer"]), s) for r, g, s in zip(rows, golds, statuses) if s != "correct"]
    assert ok / len(rows) >= 0.995, f"GSM8K agreement {ok}/{len(rows)} = {ok / len(rows):.2%}; misses: {misses[:10]}"
    # negative control: only genuine coincidences (the next problem has the same number) pass
    shifted = [grade(r["answer"], golds[(i + 1) % len(rows)])[0] for i, r in enumerate(rows)]
    coincide = [float(g == golds[(i + 1) % len(rows)]) for i, g in enumerate(golds)]
    assert shifted == coincide
