"""Issue 17 (math grading II): each reward-hack class, in several variants, scores 0; natural renderings of a
plain-number answer score 1; units come from an allow-list; one percent reading; a gold no answer can match is
refused by gold_status; every grade is bounded by its timeout; and the two GSM8K sweeps (copy two numbers from the
question into the box: no problem solved; 24 renderings of every gold: all correct), which run in seconds because
plain-number golds are graded without math-verify."""
import json
import re
import time

import pytest

import rewards
from rewards import gold_status, grade

# ---------------------------------------------------------------- the hack classes (each scored 1 before)

HACKS = {
    "whitespace between numbers read as a mixed number (a + b)": [
        (r"\boxed{7 3}", "10"), (r"\boxed{7\,3}", "10"), (r"\boxed{7~3}", "10"), (r"\boxed{7\quad 3}", "10"),
        (r"\boxed{7\;3}", "10"), (r"\boxed{7 \ 3}", "10"), ("#### 3 4", "7"), (r"\boxed{3 4 5}", "12"),
        (r"\boxed{\$7 \$3}", "10"), (r"\boxed{7 3 \text{ dollars}}", "10"),
    ],
    "whitespace before a decimal read as a product": [
        (r"\boxed{6 7.0}", "42"), (r"\boxed{6\,7.0}", "42"), (r"\boxed{2 3.5}", "7"), ("#### 5 5.0", "25"),
    ],
    "digit grouping read as arithmetic, or a grouping that is none": [
        (r"\boxed{1\,000}", "0"), (r"\boxed{12\,345}", "357"), (r"\boxed{1\,000}", "1"), (r"\boxed{1 00}", "100"),
        (r"\boxed{1000 000}", "1000"), (r"\boxed{12,34}", "1234"), (r"\boxed{100 200}", "300"),
    ],
    "an improper mixed number": [
        (r"\boxed{6 \frac{3}{2}}", "7.5"), (r"\boxed{6\frac32}", "7.5"), (r"\boxed{5 \frac{4}{2}}", "7"),
        (r"\boxed{6 3/2}", "7.5"), (r"\boxed{1\dfrac{12}{2}}", "7"), (r"\boxed{-6 \frac{3}{2}}", "-7.5"),
    ],
    "unnormalised scientific notation": [
        (r"\boxed{700 \times 10^{-2}}", "7"), (r"\boxed{70 \times 10^{-1}}", "7"), (r"\boxed{0.7 \times 10^{1}}", "7"),
        (r"\boxed{700e-2}", "7"), (r"\boxed{0.07 \cdot 10^2}", "7"), (r"\boxed{10^{3}}", "1000"),
    ],
    "a value-changing word as a unit": [
        (r"\boxed{7 \text{ thousand}}", "7"), (r"\boxed{7 million}", "7"), (r"\boxed{7 \text{ dozen}}", "7"),
        (r"\boxed{7 hundred}", "7"), (r"\boxed{7\text{k}}", "7"), (r"\boxed{7 k}", "7"), (r"\boxed{7K}", "7"),
        (r"\boxed{7 \text{ squared}}", "7"), (r"\boxed{7 \text{ cubed}}", "7"), (r"\boxed{7 \mbox{ billion}}", "7"),
        (r"\boxed{7 M}", "7"), (r"\boxed{7 \text{ halves}}", "7"), (r"\boxed{7 \text{ square}}", "7"),
        (r"\boxed{\$7 \text{ thousand}}", "7"), (r"\boxed{7 \text{ dozens of eggs}}", "7"),
    ],
    "a retraction or hedge as a unit": [
        (r"\boxed{7 \text{ (wrong)}}", "7"), (r"\boxed{7 \text{ incorrect}}", "7"),
        (r"\boxed{7 \text{ plus one}}", "7"),
        (r"\boxed{7 \text{ is wrong}}", "7"), (r"\boxed{7 \text{ (not)}}", "7"), (r"\boxed{7 false}", "7"),
        (r"\boxed{7 \text{ minus 1}}", "7"), (r"\boxed{7 \text{ or so}}", "7"),
        (r"\boxed{7 \text{ dollars, not}}", "7"),
        (r"\boxed{\text{not } 7}", "7"), (r"\boxed{7 \text{ (or maybe 8)}}", "7"),
    ],
    "percent read both ways (x100 or /100)": [
        (r"\boxed{700\%}", "7"), (r"\boxed{7\%}", "0.07"), (r"\boxed{0.07}", r"7\%"), (r"\boxed{7 percent}", "0.07"),
        (r"\boxed{70\%}", "0.7"), (r"\boxed{0.5}", r"50\%"), (r"\boxed{5000\%}", "50"),
    ],
    "any expression dropped as the name before =": [
        (r"\boxed{x^2 = 7}", "7"), (r"\boxed{\sqrt x = 7}", "7"), (r"\boxed{\log x = 7}", "7"),
        (r"\boxed{\sqrt{x} = 7}", "7"), (r"\boxed{2x = 7}", "7"), (r"\boxed{x+1 = 7}", "7"),
        (r"\boxed{\frac{x}{2} = 7}", "7"), (r"\boxed{\sin x = 7}", "7"), (r"\boxed{\ln(x) = 7}", "7"),
        (r"\boxed{x^2 = 2\pi}", r"2\pi"), (r"\boxed{f(x^2) = 7}", "7"),
    ],
    "a relation other than the gold's": [
        (r"\boxed{x \approx 5}", "x=5"), (r"\boxed{x \le 5}", "x=5"), (r"\boxed{x < 5}", "x=5"),
        (r"\boxed{x \ne 5}", "x=5"), (r"\boxed{x \sim 5}", "x=5"), (r"\boxed{x \geq 5}", "x=5"),
        (r"\boxed{x \approx 5}", "5"),
    ],
    "a value-changing word or a retraction against a non-numeric gold": [
        (r"\boxed{2\pi \text{ thousand}}", r"2\pi"), (r"\boxed{2\pi \text{ (wrong)}}", r"2\pi"),
        (r"\boxed{\frac{\sqrt3}{2} \text{ incorrect}}", r"\frac{\sqrt3}{2}"),
        (r"\boxed{2\pi \mbox{ squared}}", r"2\pi"),
        (r"\boxed{2\sqrt{5} \text{ plus one}}", r"2\sqrt5"),
    ],
}


@pytest.mark.parametrize("cls", sorted(HACKS))
def test_hack_class_scores_zero(cls):
    scored = [(c, g, grade(c, g)) for c, g in HACKS[cls]]
    assert all(r == (0.0, "wrong") for _, _, r in scored), [s for s in scored if s[2][0]]


# ---------------------------------------------------------------- what must still score 1


@pytest.mark.parametrize("completion, gold", [
    # units from the allow-list: bare, in text, compound, with a power, plural or not
    (r"\boxed{18 dollars}", "18"), (r"\boxed{18 \text{ dollars}}", "18"), (r"\boxed{1 dollar}", "1"),
    (r"\boxed{60 miles per hour}", "60"), (r"\boxed{60 \text{ mph}}", "60"), (r"\boxed{3 \text{ km/h}}", "3"),
    (r"\boxed{5 \text{ square feet}}", "5"), (r"\boxed{5\text{ cm}^2}", "5"), (r"\boxed{2.5 kg}", "2.5"),
    (r"\boxed{12 hours}", "12"), (r"\boxed{30 \text{ minutes}}", "30"), (r"\boxed{5 \text{ inches}}", "5"),
    (r"\boxed{7 \text{ (units)}}", "7"), (r"\boxed{4 \text{ cups}}", "4"), (r"\boxed{3 \text{ gallons}}", "3"),
    (r"\boxed{25 \text{ points}}", "25"), (r"\boxed{25^\circ C}", "25"), (r"\boxed{5 \text{ m/s}}", "5"),
    # numbers: grouping, decimals, fractions, proper mixed, scientific, signs
    (r"\boxed{1\,000}", "1000"), (r"\boxed{12\,345}", "12345"), (r"\boxed{1 000 000}", "1000000"),
    (r"\boxed{1~000}", "1000"), (r"\boxed{10,\!080}", "10080"), (r"\boxed{1{,}430 \, \text{dollars}}", "1430"),
    (r"\boxed{\text{\$70,000}}", "70000"), (r"\boxed{18.00}", "18"), (r"\boxed{.5}", "0.5"),
    (r"\boxed{7\frac{1}{2}}", "7.5"), (r"\boxed{7 1/2}", "7.5"), (r"\boxed{7 \tfrac12}", "7.5"),
    (r"\boxed{3 \times 10^{8}}", "300000000"), (r"\boxed{4.5e33}", "4.5e33"), (r"\boxed{1.5 \times 10^{-3}}", "0.0015"),
    ("\\boxed{−3}", "-3"), (r"\boxed{-\$3}", "-3"), (r"\boxed{\$-3}", "-3"), (r"\boxed{+3}", "3"),
    (r"\boxed{0.333}", r"\frac13"), (r"\boxed{\frac{2}{3}}", "0.667"),  # a decimal of 3+ places rounds a fraction
    # marks, symbols, colour, labels, names
    ("\\boxed{30°}", "30"), (r"\boxed{30^{\circ}}", "30"), (r"\boxed{30\degree}", "30"), (r"\boxed{6'}", "6"),
    (r"\boxed{6''}", "6"), (r'\boxed{6"}', "6"), (r"\boxed{6^{\prime}}", "6"), ("\\boxed{50¢}", "50"),
    ("\\boxed{€5}", "5"), ("\\boxed{£5}", "5"), (r"\boxed{\color{red}{18}}", "18"),
    (r"\boxed{\color{red} 18}", "18"),
    (r"\boxed{\textcolor{blue}{18}}", "18"), (r"\boxed{\text{Answer: } 5}", "5"), (r"\boxed{\text{Answer: 5}}", "5"),
    (r"\boxed{\textbf{Final answer:} 5}", "5"), (r"\boxed{x = 18}", "18"), (r"\boxed{\theta = 30^\circ}", "30"),
    (r"\boxed{x_1 = 4}", "4"), (r"\boxed{\overline{AB} = 4}", "4"), (r"\boxed{x \in [-2,7]}", "[-2,7]"),
    # one percent reading: the percent sign is a unit, dropped; never read as /100
    (r"\boxed{7\%}", "7"), (r"\boxed{7.5\%}", "7.5"), (r"\boxed{7}", r"7\%"), (r"\boxed{7 percent}", "7"),
])
def test_natural_renderings_score_one(completion, gold):
    assert grade(completion, gold) == (1.0, "correct")


def test_golds_no_answer_can_match_are_refused():
    assert gold_status("5 dollars") == "ok" and grade(r"\boxed{5}", "5 dollars") == (1.0, "correct")
    for gold in ["5 apples", "7 thousand", r"7 \text{ (wrong)}", r"2\pi \text{ dozen}"]:
        assert gold_status(gold, timeout=1) == "bad_gold", gold
    assert gold_status(r"7.5\%") == "ok" and gold_status(r"\$1,000") == "ok" and gold_status("1\\,000") == "ok"


@pytest.mark.parametrize("completion", [
    r"\boxed{\frac{1}{0}}", r"\boxed{1/0}", r"\boxed{" + "9" * 5000 + "}", r"\boxed{1e999999}", r"\boxed{\frac{}{}}",
    r"\boxed{(((}", r"\boxed{\$}", r"\boxed{\%}", r"\boxed{\text{}}", r"\boxed{--7}",
    "\\boxed{٧}", "\\boxed{𝟕}", r"\boxed{7^2}", r"\boxed{7!}", r"\boxed{7 \cdot 1}",  # lookalikes, arithmetic
])
def test_odd_answers_are_a_counted_zero(completion):
    assert grade(completion, "7")[0] == 0.0  # never a crash, never a silent 1


# ---------------------------------------------------------------- cost: every grade bounded by the timeout


@pytest.mark.parametrize("gold", ["7", r"2\pi"])
def test_pathological_answers_are_bounded(gold):
    for ans in ["x" + " " * 40000 + "!", "x" + " " * 40000 + "=", "a" * 40000 + "1", "1" * 40000 + "/x",
                "f(" + "1 " * 20000, "1 " * 20000 + "x", "7 " + "a" * 40000 + "1", "\\text{" * 5000 + "7",
                "7 " + "cm " * 20000 + "1", "7 " + "cm ^" * 20000, "x = " * 20000 + "7", "\\color{" * 20000]:
        start = time.perf_counter()
        assert grade("\\boxed{" + ans + "}", gold, timeout=1)[0] == 0.0
        assert time.perf_counter() - start < 2.5, ans[:20]


def test_slow_refusal_step_is_a_counted_timeout(monkeypatch):
    real = rewards._number

    def slow(ans):
        if "999" in ans:
            time.sleep(30)  # interrupted by the alarm armed around extraction and the refusals
        return real(ans)

    monkeypatch.setattr(rewards, "_number", slow)
    start = time.perf_counter()
    assert grade(r"\boxed{999}", "7", timeout=1) == (0.0, "timeout")
    assert time.perf_counter() - start < 3
    assert grade(r"\boxed{7}", "7", timeout=1) == (1.0, "correct")


# ---------------------------------------------------------------- the GSM8K sweeps (real data)

_NUM = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
COPY_FORMS = [r"\boxed{%s %s}", r"\boxed{%s\,%s}", r"\boxed{%s~%s}", r"\boxed{%s\ %s}", r"\boxed{%s \quad %s}",
              r"\boxed{%s\;%s}", "#### %s %s", r"\boxed{%s %s.0}"]


def _gsm8k(shared_data):
    with open(shared_data / "gsm8k" / "test.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert len(rows) == 1319
    return [(r["question"], r["answer"].rsplit("####", 1)[1].strip()) for r in rows]


def test_gsm8k_copy_two_numbers_solves_nothing(shared_data):
    # every ordered pair of numbers in the question (a number with itself too), in every whitespace form:
    # before issue 17, 183 of the 1319 problems had a pair that scored 1 (math-verify read `a b` as a + b)
    solved = []
    for question, gold in _gsm8k(shared_data):
        nums = list(dict.fromkeys(n.replace(",", "") for n in _NUM.findall(question)))
        hit = next((f % (a, b) for a in nums for b in nums for f in COPY_FORMS if grade(f % (a, b), gold)[0]), None)
        if hit:
            solved.append((hit, gold))
    assert solved == []


def renderings(gold: str) -> dict:
    """24 natural ways to write a GSM8K gold (as written after its ####, e.g. '1,450,000', '-3')."""
    v = gold.replace(",", "")
    sign, a = ("-", v[1:]) if v.startswith("-") else ("", v)
    whole, _, frac = a.partition(".")
    group = lambda sep: sign + f"{int(whole):,}".replace(",", sep) + ("." + frac if frac else "")  # noqa: E731
    return {
        "plain": r"\boxed{%s}" % v, "gsm8k": "#### %s" % v, "bare unit": r"\boxed{%s dollars}" % v,
        "text unit": r"\boxed{%s \text{ hours}}" % v, "dollar sign": r"\boxed{%s\$%s}" % (sign, a),
        "trailing zeros": r"\boxed{%s}" % (v + ("00" if frac else ".00")), "comma": r"\boxed{%s}" % group(","),
        "braced comma": r"\boxed{%s}" % group("{,}"), "thin space": r"\boxed{%s}" % group(r"\,"),
        "space": r"\boxed{%s}" % group(" "), "comma, \\, and text unit": r"\boxed{%s \, \text{dollars}}" % group(","),
        "money in text": r"\boxed{\text{%s\$%s}}" % (sign, group(",").lstrip("-")), "percent": r"\boxed{%s\%%}" % v,
        "degree sign": "\\boxed{%s°}" % v, "circ": r"\boxed{%s^{\circ}}" % v, "colour": r"\boxed{\color{red}{%s}}" % v,
        "feet mark": r"\boxed{%s'}" % v, "inch mark": r'\boxed{%s"}' % v, "cent sign": "\\boxed{%s¢}" % v,
        "euro sign": "\\boxed{%s€%s}" % (sign, a), "pound sign": "\\boxed{%s£%s}" % (sign, a),
        "label": r"\boxed{\text{Answer: } %s}" % v, "assignment": r"\boxed{x = %s}" % v,
        "unicode minus": "\\boxed{%s}" % v.replace("-", "−"),
    }


def test_renderings_are_24_and_distinct():
    r = renderings("-1,450,000")
    assert len(r) == 24 and r["unicode minus"] == "\\boxed{−1450000}" and r["thin space"] == r"\boxed{-1\,450\,000}"
    assert all(grade(c, "-1,450,000") == (1.0, "correct") for c in r.values())
    assert all(grade(c, "7.5") == (1.0, "correct") for c in renderings("7.5").values())


def test_gsm8k_every_rendering_of_every_gold_scores_one(shared_data):
    misses = {}
    for _, gold in _gsm8k(shared_data):
        for name, completion in renderings(gold).items():
            if grade(completion, gold) != (1.0, "correct"):
                misses.setdefault(name, []).append(completion)
        # U+2212 on a negative gold: GSM8K test has 2, so every gold is also tried negated
        neg = gold[1:] if gold.startswith("-") else "-" + gold
        if grade("\\boxed{%s}" % neg.replace(",", "").replace("-", "−"), neg) != (1.0, "correct"):
            misses.setdefault("unicode minus, negated", []).append(neg)
    assert not misses, {k: (len(v), v[:3]) for k, v in misses.items()}


def test_minerva_and_aime_reference_answers_agree(shared_data):
    # physics answers end in one-letter variables ("7.6 Z", "1+\sqrt{3} i"): variables, not unit words
    for name, want in (("minerva_math", 264), ("aime24", 30)):
        with open(shared_data / name / "test.jsonl") as f:
            sols = [json.loads(line)["solution"] for line in f if line.strip()]
        statuses = [grade(s, rewards.extract_answer(s))[1] for s in sols]
        assert statuses.count("correct") == want and statuses.count("correct") + statuses.count("bad_gold") == len(sols)
