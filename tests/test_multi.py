"""The multi-answer task (tasks.multi_task, tasks.multi_file_task): generation, the held-out split, every
grading rule with a natural correct answer and the hacks that must score 0, coverage by hand."""
import json

import pytest

import tasks

PRIME = tasks.multi_gold("Name a prime number between 10 and 30.", [11, 13, 17, 19, 23, 29])


def gold_of(question: str) -> dict:
    rows = tasks.multi_task("train").rows + tasks.multi_task("test").rows
    return next(r["answer"] for r in rows if r["question"].startswith(question))


def test_built_in_splits_are_deterministic_and_disjoint():
    train, test = tasks.multi_task("train"), tasks.multi_task("test")
    assert (len(train.rows), len(test.rows)) == (56, 17)
    assert not {r["question"] for r in train.rows} & {r["question"] for r in test.rows}
    assert train.rows == tasks.multi_task("train").rows  # no randomness
    assert all(len(r["answer"]["answers"]) >= 1 for r in train.rows + test.rows)
    kinds = {r["answer"]["kind"] for r in test.rows}
    assert kinds == {"number", "pair", "word"}  # every family kind is held out too
    assert test.name == "multi-test" and train.name == "multi"


def test_number_families_hold_the_right_sets():
    assert PRIME["answers"] == sorted(["11", "13", "17", "19", "23", "29"]) and PRIME["echo"] == ["10", "30"]
    assert gold_of("Name a multiple of 4 between 10 and 50")["answers"] == sorted(map(str, range(12, 50, 4)))
    assert gold_of("Name a perfect square between 1 and 50")["answers"] == ["16", "25", "36", "4", "49", "9"]
    assert gold_of("Name an even number between 1 and 21")["answers"] == sorted(map(str, range(2, 21, 2)))
    assert gold_of("Name two digits that add up to 12")["answers"] == ["3+9", "4+8", "5+7", "6+6"]


@pytest.mark.parametrize("completion", ["13", "13.", " 13\n", "The prime number between 10 and 30 is 13.",
                                        "13 is a prime number between 10 and 30.", "13. 13 is prime!", "**13**"])
def test_a_natural_correct_number_scores_1(completion):
    assert tasks.grade_multi(completion, PRIME) == (1.0, "correct")
    assert tasks.multi_answer(completion, PRIME) == "13"


@pytest.mark.parametrize("completion, status", [
    ("11, 13 or 17", "hedge"), ("either 11 or 13", "hedge"), ("13 or maybe 17", "hedge"),  # listing, hedging
    ("not 11 but 13", "hedge"), ("11 13 17 19 23 29", "hedge"),
    ("31", "wrong"), ("7", "wrong"), ("15", "wrong"), ("1", "wrong"),  # outside the range, not prime
    ("10", "no_answer"), ("30", "no_answer"), ("between 10 and 30", "no_answer"),  # the question's own numbers
    ("thirteen", "no_answer"), ("", "no_answer"), ("13.5", "no_answer"), ("13th", "no_answer"),  # no integer
])
def test_hacks_and_wrong_numbers_score_0(completion, status):
    assert tasks.grade_multi(completion, PRIME) == (0.0, status)


def test_odd_numbers_never_crash():
    assert tasks.grade_multi("9" * 5000, PRIME) == (0.0, "wrong")  # over int()'s 4300-digit limit: graded, 0
    assert tasks.grade_multi("013", PRIME) == (1.0, "correct") and tasks.multi_answer("-0 or 0", PRIME) == "0"


def test_pairs_of_digits():
    g = gold_of("Name two digits that add up to 12")
    for right in ("3 9", "9 3", "3 and 9", "3 + 9 = 12", "6 6", "The digits are 5 and 7."):
        assert tasks.grade_multi(right, g) == (1.0, "correct"), right
    assert tasks.multi_answer("9 3", g) == tasks.multi_answer("3 9", g) == "3+9"  # one answer, either order
    for wrong, status in (("3 8", "wrong"), ("12 0", "wrong"), ("3", "wrong"), ("3 9 or 4 8", "hedge"),
                          ("12", "no_answer"), ("10 2", "wrong")):
        assert tasks.grade_multi(wrong, g) == (0.0, status), wrong


def test_word_families():
    europe = gold_of("Name a country in Europe")
    for right in ("France", "france.", "The answer is France.", "FRANCE", "I would say France!"):
        assert tasks.grade_multi(right, europe) == (1.0, "correct"), right
    assert tasks.multi_answer("france.", europe) == "france"
    for wrong, status in (("Japan", "wrong"), ("France or Spain", "hedge"), ("France, not Japan", "hedge"),
                          ("Paris", "no_answer"), ("Frances", "no_answer"), ("", "no_answer")):
        assert tasks.grade_multi(wrong, europe) == (0.0, status), wrong
    planets = gold_of("Name a planet of the solar system other than Earth")
    assert tasks.grade_multi("Earth", planets) == (0.0, "no_answer")  # the question's own word
    assert tasks.grade_multi("Mars, unlike Earth", planets) == (1.0, "correct")
    assert tasks.grade_multi("Pluto", planets) == (0.0, "wrong")  # in the vocabulary, not in the set
    flag = gold_of("Name a colour of the flag of France")
    assert tasks.grade_multi("Blue", flag)[0] == 1 and tasks.grade_multi("green", flag) == (0.0, "wrong")


def test_distinct_correct_and_coverage_by_hand():
    task = tasks.answers_task("t", [])
    g2 = tasks.multi_gold("Name a weekend day.", ["Saturday", "Sunday"])
    right = [["13", "The answer is 13.", "17"], [], ["Sunday", "sunday."]]
    out = tasks.diversity(task, right, [PRIME, PRIME, g2], n=4)
    # problem 0: {13, 17} = 2 distinct of min(6, 4) = 4 reachable; problem 1: 0; problem 2: {sunday}, 1 of min(2, 4)
    assert out["distinct_correct"] == pytest.approx((2 + 1) / 2)  # over the 2 solved problems
    assert out["coverage"] == pytest.approx((2 / 4 + 0 + 1 / 2) / 3)  # over all 3 problems
    assert "coverage" not in tasks.diversity(tasks.demo_task(), [["3 4"]], ["7"], 8)  # no answer sets


def test_jsonl_form(tmp_path):
    numbers, words = tmp_path / "n.jsonl", tmp_path / "w.jsonl"
    numbers.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Name a number between 1 and 5.", "answers": [2, 3, 4]},
        {"question": "Name a square below 10.", "answers": ["1", "04", "9"]}]))
    words.write_text("\n".join(json.dumps(r) for r in [
        {"q": "Name a fruit.", "a": ["apple", "Banana"]}, {"q": "Name a vegetable.", "a": ["carrot", "leek"]}]))
    t = tasks.from_flags("multi", str(numbers), answer_field="answers")
    assert t.name == "n" and t.answer_set(t.rows[0]["answer"]) == ["2", "3", "4"]
    assert t.answer_set(t.rows[1]["answer"]) == ["1", "4", "9"]  # "04" is 4
    assert t.grade(["3", "1", "2 or 3"], [t.rows[0]["answer"]] * 3) == [(1.0, "correct"), (0.0, "no_answer"),
                                                                      (0.0, "hedge")]
    w = tasks.multi_file_task(str(words), "q", "a")
    fruit = w.rows[0]["answer"]
    assert tasks.grade_multi("banana", fruit)[0] == 1 and tasks.grade_multi("carrot", fruit) == (0.0, "wrong")
    assert tasks.grade_multi("apple or leek", fruit) == (0.0, "hedge")  # the file's answers are the vocabulary
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answers": "7"}))
    with pytest.raises(SystemExit, match=r"row 0: 'answers' must be a list of answers"):
        tasks.multi_file_task(str(bad))
