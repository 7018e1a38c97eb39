"""Code tasks (tasks.code_rows, tasks.code_task): MBPP and HumanEval rows as the trainer and the evaluator
read them, canned completions graded through the sandbox, the reference solutions validated (with the
two MBPP tasks whose own code fails), and one progrpo.py --task mbpp step with the tiny model.
The sandbox itself (limits, adversarial programs) is tests/test_sandbox.py's."""
import json
from collections import Counter

import pytest

import progrpo
import tasks

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")  # in-process runs of progrpo.main (conftest)


def test_mbpp_rows(shared_data):
    rows = tasks.load_problems("mbpp", tasks.TASKS, str(shared_data))
    raw = tasks.read_jsonl(shared_data / "mbpp" / "train.jsonl")
    assert len(rows) == len(raw) == 374
    assert len(tasks.load_problems("mbpp", tasks.BENCHMARKS, str(shared_data))) == 500  # the test split
    first = raw[0]
    assert rows[0]["question"] == f"{first['text']}\nYour code should pass this test:\n{first['test_list'][0]}"
    assert rows[0]["answer"] == {"prefix": first["test_setup_code"], "suffix": "\n".join(first["test_list"]),
                                 "calls": ["Pair", "max_chain_length"]}  # the program's, called in its sandbox


def test_humaneval_rows(shared_data):
    rows = tasks.load_problems("humaneval", tasks.BENCHMARKS, str(shared_data), limit=3)
    raw = tasks.read_jsonl(shared_data / "humaneval" / "test.jsonl")[:3]
    assert len(rows) == 3
    for row, r in zip(rows, raw):
        assert row["question"] == f"Complete this Python function:\n```python\n{r['prompt']}```"
        assert row["answer"] == {"prefix": r["prompt"], "suffix": f"{r['test']}\ncheck({r['entry_point']})",
                                 "calls": [r["entry_point"]]}


def test_code_row_without_tests_is_one_line(tmp_path):
    (tmp_path / "mbpp").mkdir()
    (tmp_path / "mbpp" / "test.jsonl").write_text(json.dumps(dict(task_id=1, text="Add.", test_list=[])) + "\n")
    with pytest.raises(SystemExit) as e:
        tasks.load_problems("mbpp", tasks.BENCHMARKS, str(tmp_path))
    assert str(e.value) == f"error: {tmp_path / 'mbpp' / 'test.jsonl'}: row 0 has no 'test_list' " \
                          f"(fields: ['task_id', 'test_list', 'text'])"


def test_canned_completions_are_graded_in_the_sandbox(shared_data):
    task = tasks.load_task("humaneval", tasks.BENCHMARKS, str(shared_data), limit=1)  # has_close_elements
    gold = task.rows[0]["answer"]
    right = ("from typing import List\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")
    # The same program, reformatted, with a comment and a docstring: not a different solution.
    same = ('from typing import List\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
            '    """Close pairs."""\n    # any pair closer than the threshold\n'
            '    return any(abs(a-b) < threshold for i, a in enumerate(numbers) for b in numbers[i+1:])\n')
    completions = [f"Here it is:\n```python\n{right}```", f"```py\n{same}```",
                   "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```",
                   "```python\ndef has_close_elements(numbers, threshold):\n    return numbers[99]\n```",
                   "The answer is to compare every pair.", "```python\ndef has_close_elements(:\n```"]
    graded = task.grade(completions, [gold] * len(completions))
    assert graded == [(1.0, "correct"), (1.0, "correct"), (0.0, "failed"), (0.0, "error"), (0.0, "no_code"),
                      (0.0, "error")]
    assert task.extract(completions[0], gold) == task.extract(completions[1], gold) is not None  # one program
    assert task.extract(completions[0], gold) != task.extract(completions[2], gold)
    assert task.extract(completions[4], gold) is None


EQUAL_TO_ANYTHING = """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __lt__ = __le__ = __gt__ = __ge__ = __contains__ = __eq__
    def __abs__(self): return self
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __neg__ = __abs__
    def __bool__(self): return True
    def __len__(self): return 0
    def __hash__(self): return 0
    def __iter__(self): return iter(())
"""
SETTRACE = """
import sys
def _skip(frame, event, arg):  # jumps the grader's failing assert, if it ran in this process
    if event == "line" and frame.f_code.co_filename != __file__:
        try:
            frame.f_lineno = frame.f_lineno + 1
        except ValueError:
            pass
    return _skip
"""
FRAMES = """
import gc, sys
def _sentinel():  # digs whatever the harness holds out of its frames and the heap, and returns it
    found = []
    frame = sys._getframe(1)
    while frame:
        found += [v for v in frame.f_locals.values() if isinstance(v, (str, bytes))]
        frame = frame.f_back
    found += [o for o in gc.get_objects() if isinstance(o, dict) and "expected" in o]
    return found
"""


@pytest.mark.parametrize("kind", ["equal to anything", "settrace skipping asserts", "the harness's frames"])
def test_reward_hacks_score_zero(shared_data, kind):
    """The three hacks of issue 18, on both code sets: each scores 0 through task.grade."""
    for name, limit in (("humaneval", 3), ("mbpp", 3)):
        task = tasks.load_task(name, tasks.BENCHMARKS, str(shared_data), limit=limit)
        completions = []
        for row in task.rows:
            entry = row["answer"]["calls"][0]
            body = {"equal to anything": (EQUAL_TO_ANYTHING, "return Anything()"),
                    "settrace skipping asserts": (SETTRACE, "sys.settrace(_skip)\n    sys._getframe(1).f_trace = _skip"
                                                            "\n    return None"),
                    "the harness's frames": (FRAMES, "return _sentinel()")}[kind]
            completions.append(f"```python\n{body[0]}\ndef {entry}(*args, **kwargs):\n    {body[1]}\n```")
        graded = task.grade(completions, [row["answer"] for row in task.rows])
        assert [reward for reward, _ in graded] == [0.0] * limit, (name, graded)


def test_validate_grader_on_code(shared_data, tmp_path, capsys):
    """A sample of each set's reference solutions (all of them: docs/code.md), with the two MBPP tasks
    whose own code fails its tests (367 in test, 927 in train) and 601 (Pair objects as arguments): reported by
    task id, never counted correct."""
    for split, bad in (("test", 367), ("train", 927)):
        raw = tasks.read_jsonl(shared_data / "mbpp" / f"{split}.jsonl")
        rows = raw[:12] + [r for r in raw if r["task_id"] == bad]
        (tmp_path / "mbpp").mkdir(exist_ok=True)
        (tmp_path / "mbpp" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "humaneval").mkdir()
    (tmp_path / "humaneval" / "test.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in tasks.read_jsonl(shared_data / "humaneval" / "test.jsonl")[:12]))
    st = tasks.validate_grader(str(tmp_path), ["mbpp", "humaneval"])
    # train's first row, 601, calls max_chain_length on Pair objects: not plain data, so no reference can pass it
    assert st == {"mbpp": Counter(correct=12, error=1), "mbpp train": Counter(correct=11, error=2),
                  "humaneval": Counter(correct=12)}
    table = capsys.readouterr().out
    assert "| mbpp | 13 | 12 | 92.3% | error 1: 367 error |" in table
    assert "| mbpp train | 13 | 11 | 84.6% | error 2: 601 error, 927 error |" in table


def test_train_one_mbpp_step_counts_no_code(shared_data, tmp_path):
    """The tiny model cannot write code: every completion is no_code, counted in no_answer, reward 0."""
    out = tmp_path / "run"
    progrpo.main(["--task", "mbpp", "--data-dir", str(shared_data), "--steps", "1", "--prompts-per-step", "2",
                  "--group-size", "2", "--max-new-tokens", "4", "--micro-batch", "4", "--out", str(out)])
    m = json.loads((out / "metrics.jsonl").read_text())
    assert (m["step"], m["reward"], m["no_answer"], m["timeouts"], m["all_wrong"]) == (1, 0.0, 4, 0, 1.0)
    assert json.loads((out / "config.json").read_text())["task"] == "mbpp"
