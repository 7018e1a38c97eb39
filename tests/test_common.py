"""Shared pieces: model names, answer fields, the prompt format, and the mapping of every local set."""
import pytest

import common


@pytest.mark.parametrize("name, hub_id", [
    ("Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B"),
    ("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ("Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-1.5B"),
    ("Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"),
    ("someorg/some-model", "someorg/some-model"),
    ("tiny", "tiny"),
])
def test_model_aliases(name, hub_id):
    assert common.resolve_model(name) == hub_id


@pytest.mark.parametrize("name", ["Qwen2.5-2B", "qwen", "Llama-3-8B"])
def test_unknown_model_is_a_clear_error(name):
    with pytest.raises(SystemExit, match="unknown model"):
        common.resolve_model(name)


@pytest.mark.parametrize("value, expected", [
    ("Janet sells 9 eggs.\n#### 1,000", "1000"),  # GSM8K worked solution
    (r"so the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # MATH solution
    (27.0, "27"),  # AMC: a JSON number
    (["$\\sqrt{2}$"], "\\sqrt{2}"),  # OlympiadBench: a list of strings
    (r"\frac{\pi}{2}", r"\frac{\pi}{2}"),  # already a final answer
])
def test_gold_reduces_an_answer_field_to_the_final_answer(value, expected):
    assert common.gold(value) == expected


def test_prompt_uses_the_chat_template_when_there_is_one():
    _, tok = common.tiny_model()
    assert common.format_prompt(tok, "sum 7", "") == "sum 7"
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert common.format_prompt(tok, "What is 1+1?") == f"<user>What is 1+1?\n{common.INSTRUCTION}<assistant>"


@pytest.mark.parametrize("name, rows", [("math500", 500), ("aime24", 30), ("amc23", 40), ("gsm8k", 1319),
                                        ("minerva_math", 272), ("olympiadbench", 675)])
def test_every_local_benchmark_maps_every_row(shared_data, name, rows):
    problems = common.load_problems(name, common.BENCHMARKS, str(shared_data))
    assert len(problems) == rows
    assert all(p["question"].strip() and p["answer"].strip() for p in problems)


def test_local_training_set_and_limit(shared_data):
    problems = common.load_problems("gsm8k", common.TASKS, str(shared_data), limit=5)
    assert len(problems) == 5 and problems[0]["answer"] == "72"  # Natalia's clips


def test_unknown_set_and_missing_local_copy_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="unknown data set 'nope'"):
        common.load_problems("nope", common.TASKS)
    with pytest.raises(SystemExit, match="No such file or directory"):
        common.load_problems("math500", common.BENCHMARKS, str(tmp_path))
    with pytest.raises(SystemExit, match="no local layout"):
        common.load_problems("dapo", common.TASKS, str(tmp_path))
