"""What a task is: its problems (built-in demo, named sets from the hub or a local folder, a JSON Lines
file) and how a completion is graded (rewards.py for math, sandbox.py runs code). No torch, no model.

A row is {"question": str, "answer": gold}. Math golds are final answers (gold()); code golds are the
tests to run, {"prefix", "suffix"} (code_rows).
"""
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import datasets

import rewards
import sandbox

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Write the complete Python solution in one ```python code block."
CODE_SETS = ("mbpp", "humaneval")  # their rows are mapped by code_rows: the fields below are not used
CODE_TIMEOUT = 10  # seconds per program, wall clock (sandbox.run)

# name: (hub path, config, split, file under --data-dir, question fields, answer fields).
# The first field present in a row is used; answers are reduced to the final answer (see gold()).
TASKS = {  # training sets
    "gsm8k": ("openai/gsm8k", "main", "train", "gsm8k/train.jsonl", ("question",), ("answer",)),
    "math": ("DigitalLearningGmbH/MATH-lighteval", "default", "train", None, ("problem",), ("solution",)),
    "dapo": ("open-r1/DAPO-Math-17k-Processed", "en", "train", None, ("prompt",), ("solution",)),
    "mbpp": ("google-research-datasets/mbpp", "full", "train", "mbpp/train.jsonl", None, None),
}
BENCHMARKS = {  # evaluation sets, laid out as ../shared/data under --data-dir
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "math500/test.jsonl", ("problem",), ("answer",)),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", "aime24/test.jsonl", ("problem",), ("answer",)),
    "amc23": ("math-ai/amc23", None, "test", "amc23/test.jsonl", ("question", "problem"), ("answer",)),
    "gsm8k": ("openai/gsm8k", "main", "test", "gsm8k/test.jsonl", ("question",), ("answer",)),
    "minerva_math": ("math-ai/minervamath", None, "test", "minerva_math/test.jsonl",
                     ("question", "problem"), ("answer", "solution")),
    "olympiadbench": ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", "olympiadbench/test.jsonl",
                      ("question",), ("final_answer",)),
    "mbpp": ("google-research-datasets/mbpp", "full", "test", "mbpp/test.jsonl", None, None),
    "humaneval": ("openai/openai_humaneval", None, "test", "humaneval/test.jsonl", None, None),
}


@dataclass
class Task:
    name: str
    rows: list  # [{"question": str, "answer"}], answer = the final answer only (code: the tests, see code_rows)
    grade: Callable[[list, list], list]  # (completions, golds) -> [(reward, status)], see rewards.grade
    extract: Callable[[str], object]  # completion -> normalised final answer (code: program) or None
    gold_ok: Callable[[object], bool]  # can `grade` score against this gold? Callers skip (and count) rows it refuses
    instruction: str = INSTRUCTION
    single_answer: bool = False  # every correct answer is equivalent to the one gold (math): see distinct_correct
    grader: str = "math-verify (rewards.grade)"  # what grades, as the run header says it


# The offline demo task (common.tiny_model is its model): several correct answers per prompt.
DEMO_TARGETS = range(2, 10)  # "sum 7" -> any two digits a b with a + b = 7: S + 1 correct answers


def demo_task() -> Task:
    rows = [{"question": f"sum {s}", "answer": str(s)} for s in DEMO_TARGETS]
    grade = lambda completions, targets: [(r := rewards.pair_reward(c, t), "correct" if r else "wrong")
                                          for c, t in zip(completions, targets)]
    return Task("demo", rows, grade, rewards.extract_pair, lambda target: True, instruction="", grader="pair sums")


# ---------------------------------------------------------------------------------------------
def gold(value) -> str | None:
    """The final answer from a data set's answer field: a list (OlympiadBench) gives its first item,
    a number its shortest form (27.0 -> '27'), a worked solution its \\boxed{} or '#### x' answer.
    Anything else (true/false, an object, a nested list) is None: a bad gold, skipped and counted."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return rewards.extract_answer(text) or text.strip("$ ")


def read_rows(source, rows, question_fields, answer_fields, limit=0) -> list:
    """Map raw rows to {"question", "answer"}; a row that cannot be mapped stops with its number."""
    out = []
    for i, row in enumerate(rows):
        if limit and len(out) == limit:
            break
        picked = []
        for fields in (question_fields, answer_fields):  # the first field present and not empty
            value = next((row[f] for f in fields if row.get(f) not in (None, "", [])), None)
            if value is None:
                there = next((f for f in fields if f in row), None)
                raise SystemExit(f"error: {source}: row {i}: field {there!r} is {json.dumps(row[there])}" if there else
                                 f"error: {source}: row {i} has no field {'/'.join(fields)!r} (fields: {sorted(row)})")
            picked.append(value)
        out.append({"question": str(picked[0]), "answer": gold(picked[1])})
    return out


def read_jsonl(path) -> list:
    """The objects of a JSON Lines file (a UTF-8 byte-order mark is allowed); anything else stops
    with one line naming the file and the line."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as e:  # missing, a folder, unreadable
        raise SystemExit(f"error: data file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SystemExit(f"error: {path}: line {line} is not UTF-8 text") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise SystemExit(f"error: {path}: line {n} is not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(rows[-1], dict):
            raise SystemExit(f"error: {path}: line {n} is a JSON {type(rows[-1]).__name__}, not an object: "
                             f"expected JSON Lines, one object per line")
    if not rows:
        raise SystemExit(f"error: data file {path} holds no rows (empty or blank)")
    return rows


def code_rows(source, rows, limit=0) -> list:
    """MBPP or HumanEval rows -> {"question", "answer": {"prefix", "suffix"}}: the program run is prefix +
    the completion's last code block + suffix (rewards.code_program). MBPP: the task and its first assert
    (which names the function); HumanEval: the signature and docstring, which also go first in the program,
    so that their imports come along (a def with only a docstring is valid; the model's def replaces it)."""
    out = []
    for i, row in enumerate(rows):
        if limit and len(out) == limit:
            break
        need = ("prompt", "test", "entry_point") if "entry_point" in row else ("text", "test_list")
        if missing := [f for f in need if not row.get(f)]:
            raise SystemExit(f"error: {source}: row {i} has no {missing[0]!r} (fields: {sorted(row)})")
        if "entry_point" in row:  # HumanEval
            out.append(dict(question=f"Complete this Python function:\n```python\n{row['prompt']}```",
                            answer=dict(prefix=row["prompt"], suffix=f"{row['test']}\ncheck({row['entry_point']})")))
        else:  # MBPP
            out.append(dict(question=f"{row['text']}\nYour code should pass this test:\n{row['test_list'][0]}",
                            answer=dict(prefix=row.get("test_setup_code") or "", suffix="\n".join(row["test_list"]))))
    return out


def load_problems(name: str, table: dict, data_dir: str = "", limit: int = 0) -> list:
    """Problems of a named set from `table` (TASKS or BENCHMARKS): from data_dir when given, else the hub."""
    if name not in table:
        raise SystemExit(f"error: unknown data set {name!r}; known: {', '.join(table)}")
    hub, config, split, file, qf, af = table[name]
    if data_dir:
        if file is None:
            raise SystemExit(f"error: {name!r} has no local layout; drop --data-dir to use the hub")
        source = Path(data_dir) / file
        rows = read_jsonl(source)
    else:
        source = hub
        try:
            rows = datasets.load_dataset(hub, config, split=split)
        except (OSError, ValueError, ConnectionError) as e:  # offline, unknown id or split
            raise SystemExit(f"error: cannot load {hub} from the hub ({type(e).__name__}); "
                             f"use --data-dir with a local copy") from None
    return code_rows(source, rows, limit) if name in CODE_SETS else read_rows(source, rows, qf, af, limit)


def file_task(path: str, question_field: str = "question", answer_field: str = "answer", limit: int = 0) -> Task:
    """Math problems from a local JSON Lines file (progrpo.py and eval.py --data), named after the file."""
    return math_task(Path(path).stem, read_rows(path, read_jsonl(path), (question_field,), (answer_field,), limit))


def from_flags(name: str, data: str = "", question_field: str = "question", answer_field: str = "answer",
               data_dir: str = "", instruction: str | None = None) -> Task:
    """The training task of progrpo.py's (and progrpo_trl.py's) flags: --data's file, the demo, or a named
    set of TASKS; --instruction, when given, replaces the task's own ("" for none)."""
    task = (file_task(data, question_field, answer_field) if data else demo_task() if name == "demo"
            else load_task(name, TASKS, data_dir))
    task.instruction = task.instruction if instruction is None else instruction
    return task


def load_task(name: str, table: dict, data_dir: str = "", limit: int = 0) -> Task:
    rows = load_problems(name, table, data_dir, limit)
    return code_task(name, rows) if name in CODE_SETS else math_task(name, rows)


def math_task(name: str, rows: list) -> Task:
    gold_ok = functools.cache(lambda gold: rewards.gold_status(gold) == "ok")  # once per gold: it may cost a timeout
    grade = lambda completions, golds: [rewards.grade(c, g) for c, g in zip(completions, golds)]
    return Task(name, rows, grade, rewards.extract_answer, gold_ok, single_answer=True)


def code_task(name: str, rows: list) -> Task:
    """Each program runs in sandbox.run's separate, limited process; a step's programs run in parallel."""
    def grade(completions, golds):
        programs = [rewards.code_program(c, g["prefix"], g["suffix"]) for c, g in zip(completions, golds)]
        return [(float(s == "correct"), s) for s in sandbox.run_many(programs, CODE_TIMEOUT)]

    def program(completion):  # distinct correct programs: compared as normalised ASTs (rewards.normalise_code)
        code = rewards.extract_code(completion)
        return code and rewards.normalise_code(code)
    grader = f"sandbox.py, {sandbox.isolation()}"  # runs an empty program: a sandbox that cannot run fails here
    return Task(name, rows, grade, program, lambda gold: True, CODE_INSTRUCTION, grader=grader)


# ---------------------------------------------------------------------------------------------
# Diversity among the correct completions of a problem: progrpo.py and progrpo_trl.py log it per step,
# eval.py per benchmark.
def diversity(task: Task | None, correct: list) -> dict:
    """The two diversity metrics from correct[p], problem p's correct completions: distinct_correct, mean
    over problems with >= 1 correct (0 when none; left out when task is None), and reasoning_diversity,
    mean over problems with >= 2 correct (nan when none)."""
    solved = [texts for texts in correct if texts]
    diverse = [d for texts in solved if (d := reasoning_diversity(texts)) is not None]
    out = {"reasoning_diversity": sum(diverse) / len(diverse) if diverse else math.nan}
    if task is None:
        return out
    return {"distinct_correct": sum(distinct_correct(task, t) for t in solved) / max(len(solved), 1)} | out


def distinct_correct(task: Task, texts: list) -> int:
    """Distinct correct answers among `texts`, the correct completions of one problem, as equivalence
    classes: a math answer is correct only when math-verify finds it equal to the gold, so all of them
    are one class (1 when solved); demo pairs and code programs (normalised ASTs) count one by one."""
    return min(len(texts), 1) if task.single_answer else len({task.extract(t) for t in texts})


def reasoning_diversity(texts: list, n: int = 3) -> float | None:
    """1 - the mean pairwise Jaccard similarity of the completions' word n-gram sets (word = a
    whitespace-separated token): 0 when every correct completion says the same, 1 when no two share an
    n-gram. None with fewer than two completions. A text shorter than n words is one n-gram: itself."""
    if len(texts) < 2:
        return None
    grams = [{tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))} for w in (t.split() for t in texts)]
    pairs = [(a, b) for i, a in enumerate(grams) for b in grams[i + 1:]]
    return 1 - sum(len(a & b) / max(len(a | b), 1) for a, b in pairs) / len(pairs)
