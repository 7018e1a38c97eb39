"""rewards.py: answer extraction, math-verify grading and its accounting, the refused reward hacks,
gold_status, the demo pair task, and an end-to-end agreement check on the real MATH-500 and GSM8K
reference solutions."""
import json
import signal
import threading
import time

import math_verify
import math_verify.grader
import math_verify.parser
import pytest

from rewards import extract_answer, extract_pair, gold_status, grade, pair_reward

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
    (r"\boxed{\mathbf{127}}", "127"),                        # bold digits (an AIME solution)
    (r"\boxed{3} then \boxed{4}}", "4"),                      # a stray brace after the last box
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [
    r"\boxed{}", r"\boxed{  }", r"\boxed{12", r"the answer is \boxed",
    r"\boxed{3} and then \boxed{",     # unterminated LAST box: no fallback to the earlier one
    r"\boxed{3} and then \boxed{}",    # empty last box: likewise
    r"\boxed{3 \boxed{7}}", r"\boxed{8_{\boxed{7}}}", r"\fbox{8 \fbox{7}}",  # a box in the last box
    r"\boxed{7} then \boxed{8 \boxed{7}}", r"\boxed{\boxed{7}}",
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


@pytest.mark.parametrize("completion", [
    r"\boxed{}", r"\boxed{12", r"\boxed{12} then \boxed{", "12", r"$\frac{1}{2}$", "", None,
])
def test_grade_no_answer(completion):
    assert grade(completion, "12") == (0.0, "no_answer")


@pytest.mark.parametrize("gold", [r"\frac{", r"\begin{", "", "   ", "$$", r"\boxed{}", r"\boxed{12", "####", None])
def test_bad_gold(gold):
    assert grade(r"\boxed{1}", gold) == (0.0, "bad_gold")
    assert grade(r"\frac{", gold) == (0.0, "bad_gold")     # not a silent 1 when both are garbage


def test_unparseable_gold_really_is_unparseable():
    # r"\frac{" is extractable, but math-verify yields only its raw-string fallback, no math object
    parsed = math_verify.parse("\\boxed{\\frac{}")
    assert parsed and all(isinstance(x, str) for x in parsed)


def test_numeric_gold_types():
    assert grade(r"\boxed{27}", 27.0) == (1.0, "correct")   # amc23 stores answers as JSON numbers
    assert grade(r"\boxed{27}", 27) == (1.0, "correct")


# ---------------------------------------------------------------- reward hacks (module doc, rules 1-6)


@pytest.mark.parametrize("completion, gold, reward", [
    # the hacks (most scored 1.0 before: math-verify is lenient) and the rule that refuses each
    (r"\boxed{3 \boxed{7}}", "7", 0.0),                         # 1: a box inside the final box
    (r"\boxed{8_{\boxed{7}}}", "7", 0.0),                       # 1
    (r"\fbox{8 \fbox{7}}", "7", 0.0),                           # 1: the last box match is the inner one
    (r"\boxed{\sout{8} 7}", "7", 0.0),                          # 2 (and 5): no number grabbed out of it
    (r"\boxed{\cancel{8} 7}", "7", 0.0),                        # 2
    (r"\boxed{\sout{\frac12} \frac{\sqrt3}{2}}", r"\frac{\sqrt3}{2}", 0.0),  # 2, for a non-numeric gold
    (r"\boxed{\approx 7}", "7", 0.0),                           # 2 and 3
    (r"\boxed{8=7}", "7", 0.0),                                 # 3: math-verify kept the right side
    (r"\boxed{\text{I don't know}=7}", "7", 0.0),               # 3 and 4
    (r"\boxed{x = 8 = 7}", "7", 0.0),                           # 3: one assignment is dropped, not two
    (r"\boxed{x = 8 = 5}", "x=5", 0.0),                         # 3: math-verify truncated the chain
    (r"\boxed{x \approx 7}", "7", 0.0),                         # 3
    (r"\boxed{\frac12 = \frac{\sqrt3}{2}}", r"\frac{\sqrt3}{2}", 0.0),  # 3
    (r"\boxed{7 \text{ (or maybe 8)}}", "7", 0.0),              # 4: math-verify dropped the text
    (r"\boxed{7 \mbox{ or 8}}", "7", 0.0),                      # 4
    (r"\boxed{7 \mathrm{ or 8}}", "7", 0.0),                    # 4
    (r"\boxed{7 \text{ maybe}}", "7", 0.0),                     # 4: a hedge word is not a unit
    (r"\boxed{\text{maybe } 7}", "7", 0.0),                     # 4: text before the number
    (r"\boxed{7 \text{ cm} \text{ or 8}}", "7", 0.0),           # 4: one unit only
    (r"\boxed{\frac{\sqrt3}{2} \text{ (or 1/2)}}", r"\frac{\sqrt3}{2}", 0.0),  # 4, non-numeric gold
    (r"\boxed{7 + 3}", "10", 0.0),                              # 5: the question's arithmetic
    (r"\boxed{12*5-3}", "57", 0.0),                             # 5
    (r"\boxed{2 \cdot 5}", "10", 0.0),                          # 5
    (r"\boxed{\sqrt{100}}", "10", 0.0),                         # 5
    (r"\boxed{\frac{20}{2}}", "10", 0.0),                       # 5: a fraction counts only in lowest terms
    (r"\boxed{20/2}", "10", 0.0),                               # 5
    (r"\boxed{7_{8}}", "7", 0.0),                               # 5: math-verify dropped the subscript
    (r"\boxed{7, 8}", "7", 0.0),                                # 5
    (r"\boxed{\frac{7}{1}}", "7", 0.0),                         # 5
    (r"\boxed{7 or eight}", "7", 0.0),                          # 4 and 5: bare words are held to the unit rule
    (r"\boxed{seven}", "7", 0.0),                               # 5
    (r"\boxed{rtue}", "True", 0.0),                             # 6: not the product E*r*t*u
    (r"\boxed{rtue}", r"\text{True}", 0.0),                     # 6
    # legitimate near-misses that must keep scoring 1.0
    (r"\boxed{5}", "x=5", 1.0),
    (r"\boxed{x=5}", "x=5", 1.0),
    (r"\boxed{x = 5}", "5", 1.0),                               # 3: one leading assignment is dropped
    (r"\boxed{\theta = 30^\circ}", r"30^\circ", 1.0),
    (r"\boxed{y = 2x + 3}", "y = 2x + 3", 1.0),
    (r"\boxed{x \in [-2,7]}", "[-2,7]", 1.0),
    (r"\boxed{[-2,7]}", r"x \in [-2,7]", 1.0),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", 1.0),  # non-numeric gold: math-verify decides
    (r"\boxed{\frac{\sqrt{6}}{2\sqrt{2}}}", r"\frac{\sqrt3}{2}", 1.0),
    (r"\boxed{2\pi}", r"2\pi", 1.0),
    (r"\boxed{0.5}", r"\frac12", 1.0),
    (r"\boxed{\frac{1}{2}}", r"\dfrac{1}{2}", 1.0),
    (r"\boxed{3/4}", r"\frac 34", 1.0),
    (r"\boxed{\frac{-3}{4}}", r"-\frac34", 1.0),
    (r"\boxed{4\frac{2}{3}}", r"\frac{14}{3}", 1.0),            # a mixed number
    (r"\boxed{\frac{275}{2}}", r"137 \frac{1}{2}", 1.0),
    (r"\boxed{1,000}", "1000", 1.0),
    (r"\boxed{- 7}", "-7", 1.0),
    (r"\boxed{3 \times 10^{8}}", "300000000", 1.0),             # scientific notation is a number
    (r"\boxed{10\%}", "10", 1.0),                               # one reading: % is a unit, dropped (never /100)
    (r"\boxed{10}", r"10\%", 1.0),
    (r"\boxed{\$18.90}", r"\$18.90", 1.0),
    (r"\boxed{30}", r"30^\circ", 1.0),
    (r"\boxed{5\text{ cm}}", "5", 1.0),                         # 4: one trailing unit
    (r"\boxed{5 \text{ inches}}", "5", 1.0),
    (r"\boxed{7 \ \text{cm}}", "7", 1.0),
    (r"\boxed{7\,\mathrm{cm}}", "7", 1.0),
    (r"\boxed{15\mbox{ cm}^2}", r"15\mbox{ cm}^2", 1.0),        # MATH-500 answers with units
    (r"\boxed{5.4}", r"5.4 \text{ cents}", 1.0),
    (r"\boxed{\frac{270}{7}\text{ degrees}}", r"\frac{270}7\text{ degrees}", 1.0),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", 1.0),          # 4: text as the whole answer
    (r"\boxed{Evelyn}", r"\text{Evelyn}", 1.0),
    (r"\boxed{\text{(E)}}", r"\text{(E)}", 1.0),
    (r"\boxed{\textbf{(073)}}", "73", 1.0),                     # AIME style
    (r"\boxed{{18}}", "18", 1.0),
    (r"\boxed{\left(18\right)}", "18", 1.0),
    (r"\boxed{\displaystyle 18}", "18", 1.0),
    (r"\boxed{18 \quad \text{cm}}", "18", 1.0),
    (r"\boxed{18\text{ }}", "18", 1.0),
    (r"\boxed{18\text{\%}}", "18", 1.0),
    (r"\boxed{18 \text{ (units)}}", "18", 1.0),
    (r"\boxed{\frac{3}{4}~\text{cm}}", r"\frac34", 1.0),
    (r"\boxed{18 dollars}", "18", 1.0),                         # 4: a bare unit word from the allow-list
    (r"\boxed{18 apples}", "18", 0.0),                          # 4: a count noun is no unit (issue 17: allow-list)
    (r"\boxed{5 cm}", "5", 1.0),
    (r"\boxed{AB = 18}", "18", 1.0),                            # 3: a name is dropped before "="
    (r"\boxed{f(3) = 18}", "18", 1.0),
    (r"\boxed{m\angle A = 30^\circ}", "30", 1.0),
    (r"\boxed{True}", "True", 1.0),                             # 6: a word equals itself
    (r"\boxed{\text{True}}", "True", 1.0),
])
def test_reward_hacks(completion, gold, reward):
    assert grade(completion, gold)[0] == reward


def test_long_answers_are_cheap():
    # the refusal rules run before math-verify's timeout is armed: they must stay linear-time and not raise
    n = 20000
    for ans in ["7 \\text{" + "a" * n + "1}", "\\frac{" + "1" * n + "}{2}", "a " * n + "1 = 7", "\\ab" * 5000 + "1 = 7",
                "7" + "\\," * n + "x", "7 \\text{cm}" + " " * n + "x", "x_{" + "1" * n]:
        start = time.perf_counter()
        assert grade("\\boxed{" + ans + "}", "7", timeout=1)[0] == 0.0
        assert time.perf_counter() - start < 2


def test_refusal_statuses():
    assert grade(r"\boxed{3 \boxed{7}}", "7") == (0.0, "no_answer")  # rule 1: the final box is not clean
    assert grade(r"\boxed{8=7}", "7") == (0.0, "wrong")               # rules 2-5: an answer, refused
    assert grade(r"\boxed{7 + 3}", "10") == (0.0, "wrong")


# ---------------------------------------------------------------- gold_status


@pytest.mark.parametrize("gold, status", [
    ("7", "ok"), (27.0, "ok"), (27, "ok"), ("x=5", "ok"), (r"\text{Evelyn}", "ok"), (r"\infty", "ok"),
    (r"(-\infty, 0]", "ok"), (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", "ok"), ("True", "ok"),
    (r"so the answer is $\boxed{3}$.", "ok"),
    (r"\frac{1}{0}", "bad_gold"), ("0/0", "bad_gold"), (r"\infty - \infty", "bad_gold"),  # undefined
    ("9^{9^{9}}", "bad_gold"), ("(10^{10})!", "bad_gold"),      # every comparison would time out
    (True, "bad_gold"), (False, "bad_gold"), ({"a": 1}, "bad_gold"), ([[1]], "bad_gold"), ([], "bad_gold"),
    (None, "bad_gold"), (float("nan"), "bad_gold"), (float("inf"), "bad_gold"), ("nan", "bad_gold"),
    ("-inf", "bad_gold"),                                       # a non-finite float made a string
    ("", "bad_gold"), ("   ", "bad_gold"), (r"\frac{", "bad_gold"), (r"\boxed{12", "bad_gold"),
    (r"\boxed{3 \boxed{7}}", "bad_gold"),
])
def test_gold_status(gold, status):
    start = time.perf_counter()
    assert gold_status(gold, timeout=1) == status
    assert time.perf_counter() - start < 3  # bounded: each step runs under the 1 s timeout


def test_grade_agrees_on_undefined_gold():
    assert grade(r"\boxed{\frac{1}{0}}", r"\frac{1}{0}") == (0.0, "bad_gold")  # not zoo == zoo
    assert grade(r"\boxed{1}", float("nan")) == (0.0, "bad_gold")


# ---------------------------------------------------------------- timeouts and errors


def _sleepy(*args, **kwargs):
    time.sleep(30)  # interrupted by math-verify's SIGALRM after `timeout` seconds


def test_comparison_timeout_is_a_counted_zero(monkeypatch):
    handler = signal.getsignal(signal.SIGALRM)
    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", _sleepy)
    # "2.0\pi" vs "2\pi": the raw-string fallbacks differ, so only the (stalled) sympy comparison can decide
    # (a plain-number gold such as "2" is compared in rewards.py, without math-verify)
    start = time.perf_counter()
    assert grade(r"\boxed{2.0\pi}", r"2\pi", timeout=1) == (0.0, "timeout")  # real alarm, not a mock raise
    assert time.perf_counter() - start < 10
    assert signal.getsignal(signal.SIGALRM) == handler and signal.alarm(0) == 0  # nothing left armed


def test_parse_timeout_is_a_counted_zero(monkeypatch):
    real = math_verify.parser.extract_target_from_pred

    def slow_on_marker(pred, *args, **kwargs):
        if "999" in pred:
            _sleepy()
        return real(pred, *args, **kwargs)

    monkeypatch.setattr(math_verify.parser, "extract_target_from_pred", slow_on_marker)
    assert grade(r"\boxed{999\pi}", r"2\pi", timeout=0.2) == (0.0, "timeout")  # prediction parse
    assert grade(r"\boxed{2\pi}", r"999\pi", timeout=1) == (0.0, "timeout")    # gold parse
    assert grade(r"\boxed{2\pi}", r"2\pi", timeout=1) == (1.0, "correct")


def test_errors_are_counted_not_raised(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("sympy blew up")

    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", boom)
    assert grade(r"\boxed{2.0\pi}", r"2\pi") == (0.0, "wrong")
    monkeypatch.setattr(math_verify.parser, "extract_target_from_pred", boom)
    assert grade(r"\boxed{2\pi}", r"2\pi") == (0.0, "bad_gold")
    assert grade(r"\boxed{2}", "2") == (1.0, "correct")  # a plain-number gold never reaches math-verify


def test_grade_refuses_other_threads():
    errors = []

    def work():
        try:
            grade(r"\boxed{2}", "2")
        except RuntimeError as e:
            errors.append(e)

    def work_gold():
        try:
            gold_status("2")
        except RuntimeError as e:
            errors.append(e)

    for target in (work, work_gold):
        t = threading.Thread(target=target)
        t.start()
        t.join()
    assert len(errors) == 2 and all("main thread" in str(e) for e in errors)


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
    assert all(gold_status(r["answer"]) == "ok" for r in rows)
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
