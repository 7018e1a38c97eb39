"""What a task is: its problems (built-in demo, named sets from the hub or a local folder, a JSON Lines
file) and how a completion is graded (rewards.py for math, sandbox.py runs code). No torch, no model.

A row is {"question": str, "answer": gold}. Math golds are final answers (gold()); code golds are the
tests to run, {"prefix", "suffix", "calls"} (code_rows); multi-answer golds are answer sets (multi_gold).
"""
import ast
import builtins
import functools
import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import datasets

import rewards
import sandbox

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CORRECT = "correct"  # the one status that means solved, for every task: trainer, evaluator and TRL plug-in;
CORRECT_REWARD = 1.0  # every grader gives it the full reward (where only rewards are seen: progrpo_trl.py)
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
    rows: list  # [{"question": str, "answer"}], answer = the final answer only (code: tests, see code_rows)
    grade: Callable[[list, list], list]  # (completions, golds) -> [(reward, status)], see rewards.grade
    # (completion, gold) -> normalised final answer (code: program) or None
    extract: Callable[[str, object], object]
    # can `grade` score against this gold? Callers skip (and count) rows it refuses
    gold_ok: Callable[[object], bool]
    instruction: str = INSTRUCTION
    # every correct answer is equivalent to the one gold (math): see distinct_correct
    single_answer: bool = False
    grader: str = "math-verify (rewards.grade)"  # what grades, as the run header says it
    answer_set: Callable[[object], list] | None = None  # gold -> every correct answer (multi-answer tasks)


# The offline demo task (common.tiny_model is its model): several correct answers per prompt.
DEMO_TARGETS = range(2, 10)  # "sum 7" -> any two digits a b with a + b = 7: S + 1 correct answers


def demo_task() -> Task:
    rows = [{"question": f"sum {s}", "answer": str(s)} for s in DEMO_TARGETS]
    grade = lambda completions, targets: [(r := rewards.pair_reward(c, t), "correct" if r else "wrong")
                                          for c, t in zip(completions, targets)]
    return Task("demo", rows, grade, lambda c, _: rewards.extract_pair(c), lambda target: True,
                instruction="", grader="pair sums")


# ---------------------------------------------------------------------------------------------
# Questions with several correct answers ("Name a prime number between 10 and 30."), built in code: where a
# small real model (SmolLM2-135M) solves some and can find several of the answers, so that GRPO's collapse
# onto one answer, and what ARM does about it, can be measured (docs/real-weights.md).
# A gold is {"answers": the correct set, "kind": "number" | "pair" | "word", "vocab": the words that count
# as an answer attempt (word kind), "echo": the question's own numbers or vocabulary words}.
NUMBER_ONLY, PAIR_ONLY, NAME_ONLY = ("Answer with the number only.", "Answer with the two digits only.",
                                     "Answer with the name only.")
WORD_LISTS = {  # a family's vocabulary: every word of its lists (a listed word outside the set is wrong)
    "country": {"Europe": "France Germany Italy Spain Portugal Greece Poland Sweden Norway Finland Denmark "
                          "Ireland Austria Switzerland Belgium Netherlands Hungary Romania Ukraine Croatia",
                "Asia": "China Japan India Korea Vietnam Thailand Indonesia Malaysia Pakistan Nepal Mongolia "
                        "Philippines Cambodia Laos Bangladesh Iran Iraq Israel Jordan Syria",
                "Africa": "Egypt Nigeria Kenya Ethiopia Morocco Algeria Ghana Tunisia Senegal Uganda "
                          "Tanzania Sudan Angola Zambia Zimbabwe Mali Niger Chad Somalia Libya",
                "South America": "Brazil Argentina Chile Peru Colombia Venezuela Ecuador Bolivia Uruguay "
                                 "Paraguay",
                "North America": "Canada Mexico Cuba Jamaica Haiti Panama Honduras Guatemala Nicaragua",
                "Oceania": "Australia Fiji Samoa Tonga"},
    "colour": {"rainbow": "red orange yellow green blue indigo violet", "other": "pink black white brown "
               "grey gray purple gold silver", "France": "blue white red", "Italy": "green white red",
               "Germany": "black red gold", "Ireland": "green white orange", "Japan": "white red"},
    "planet": {"all": "Mercury Venus Earth Mars Jupiter Saturn Uranus Neptune", "other": "Pluto Sun Moon"},
    "season": {"all": "spring summer autumn fall winter"},
    "month": {"all": "January February March April May June July August September October November December",
              "31": "January March May July August October December", "30": "April June September November"},
    "day": {"all": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday", "weekend": "Saturday Sunday",
            "weekday": "Monday Tuesday Wednesday Thursday Friday"},
}
PLANETS = WORD_LISTS["planet"]["all"].split()
WORD_PROBLEMS = [  # (family, question, correct set); each question once, the held-out ones by position
    *[("country", f"Name a country in {c}.", c) for c in ("Europe", "Asia", "Africa", "South America")],
    *[("country", f"Name a country that is not in {c}.", f"not {c}") for c in ("Europe", "Asia", "Africa")],
    ("colour", "Name a colour of the rainbow.", "rainbow"),
    *[("colour", f"Name a colour of the flag of {c}.", c) for c in ("France", "Italy", "Germany", "Ireland")],
    ("planet", "Name a planet of the solar system.", "all"),
    ("planet", "Name a planet of the solar system other than Earth.", "not Earth"),
    ("planet", "Name a planet that is farther from the Sun than Earth.", "outer"),
    ("planet", "Name a planet that is closer to the Sun than Mars.", "inner"),
    ("month", "Name a month of the year.", "all"), ("season", "Name a season of the year.", "all"),
    ("month", "Name a month that has 31 days.", "31"), ("month", "Name a month that has 30 days.", "30"),
    ("day", "Name a day of the week.", "all"), ("day", "Name a day of the weekend.", "weekend"),
    ("day", "Name a weekday.", "weekday"),
]


def word_set(family: str, key: str) -> list:
    lists = WORD_LISTS[family]
    if key.startswith("not "):  # every listed word of the family except those of one list
        exclude = set(lists[key[4:]].split()) if key[4:] in lists else {key[4:]}
        return [w for k, v in lists.items() if k != "other" for w in v.split() if w not in exclude]
    if family == "planet" and key in ("outer", "inner"):
        return PLANETS[3:] if key == "outer" else PLANETS[:3]
    return lists[key].split()


def number_problems() -> list:
    """(question, correct numbers) of the number families, in a fixed order. 'Between a and b' excludes both
    ends, and no answer is a number of its question (so an echo is never right)."""
    primes = [p for p in range(2, 200) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
    between = lambda a, b, ok: [x for x in range(a + 1, b) if ok(x)]
    out = [(f"Name a prime number between {a} and {a + w}.", between(a, a + w, lambda x: x in primes))
           for a in (1, 5, 10, 20, 30, 40, 50, 60) for w in (20, 30)]
    out += [(f"Name {kind} number between {a} and {a + 20}.", between(a, a + 20, lambda x, r=r: x % 2 == r))
            for a in (1, 10, 20, 30, 40, 50) for kind, r in (("an even", 0), ("an odd", 1))]
    out += [(f"Name a multiple of {k} between {a} and {b}.", between(a, b, lambda x, k=k: x % k == 0))
            for k, a, b in ((2, 20, 40), (3, 10, 40), (4, 10, 50), (5, 10, 60), (5, 50, 100), (10, 10, 100),
                            (10, 100, 200), (3, 40, 70))]
    out += [(f"Name a perfect square between {a} and {b}.",
             between(a, b, lambda x: round(x ** 0.5) ** 2 == x))
            for a, b in ((1, 30), (1, 50), (1, 100), (10, 200))]
    out += [("Name a two-digit number.", list(range(10, 100))),
            ("Name a three-digit number.", list(range(100, 1000)))]
    return out


def multi_task(split: str = "train") -> Task:
    """The built-in multi-answer task: number families (primes, multiples, squares, even and odd numbers in
    a range), two digits with a given sum, and word families (countries of a continent, colours of the
    rainbow or of a flag, planets, months, days). Deterministic; every fourth problem of each family is
    held out (split "test"), so no prompt is in both splits."""
    families = [[(q, NUMBER_ONLY, "number", ans, []) for q, ans in number_problems()],
                [(f"Name two digits that add up to {s}.", PAIR_ONLY, "pair",
                  [f"{a}+{s - a}" for a in range(s - 9, s // 2 + 1)], []) for s in range(10, 18)],
                [(q, NAME_ONLY, "word", word_set(f, key),
                  sum((v.split() for v in WORD_LISTS[f].values()), []))
                 for f, q, key in WORD_PROBLEMS]]
    rows = []
    for family in families:
        for i, (question, instruction, kind, answers, vocab) in enumerate(family):
            if (i % 4 == 3) == (split == "test"):
                gold = multi_gold(question, answers, kind, vocab)
                rows.append({"question": f"{question} {instruction}", "answer": gold})
    return answers_task(f"multi{'' if split == 'train' else '-test'}", rows)


def multi_gold(question: str, answers: list, kind: str = "", vocab: list = ()) -> dict:
    """A gold of the multi-answer task: answers normalised, the question's own numbers or words as echo."""
    answers = [str(a).strip() for a in answers]
    kind = kind or ("number" if all(re.fullmatch(r"-?\d+", a) for a in answers) else "word")
    vocab = sorted({w.lower() for w in [*vocab, *answers]}) if kind == "word" else []
    echo = (list(map(canonical_int, re.findall(r"-?\d+", question))) if kind != "word" else
            [w for w in vocab if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", question, re.I)])
    answers = sorted({canonical_int(a) if kind == "number" else a.lower() for a in answers})
    return {"answers": answers, "kind": kind, "vocab": vocab, "echo": sorted(set(echo) - set(answers))}


def multi_candidates(completion: str, gold: dict) -> list:
    """The answer attempts in a completion, in order, the question's own numbers or words left out:
    numbers (integers: '13', '13.' or 'is 13'), or, for words, the gold's vocabulary (whole words, any
    case, longest first: 'South Africa' is not 'Africa')."""
    if gold["kind"] == "word":
        words = sorted(gold["vocab"], key=len, reverse=True)
        pattern = r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)"
        found = [w.lower() for w in re.findall(pattern, completion, re.I)] if words else []
    else:
        found = [canonical_int(x) for x in re.findall(r"(?<![\w.])-?\d+(?!\.\d|\d|\w)", completion)]
    return [x for x in found if x not in gold["echo"]]


def canonical_int(text: str) -> str:
    """'007' -> '7', '-0' -> '0': an integer's digits without int() (it refuses numbers over 4300 digits)."""
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    digits = digits.lstrip("0") or "0"
    return digits if digits == "0" else sign + digits


def multi_answer(completion: str, gold: dict) -> str | None:
    """The completion's one answer, normalised ('13', 'france', pairs as '3+9' with the smaller digit first),
    or None when it has none or more than one (a hedge: '11, 13 or 17', 'either 11 or 13')."""
    return one_answer(multi_candidates(completion, gold), gold["kind"])


def one_answer(found: list, kind: str) -> str | None:
    """multi_answer's choice among a completion's answer attempts `found`."""
    if kind == "pair":
        return "+".join(sorted(found)) if len(found) == 2 else None
    return found[0] if len(set(found)) == 1 else None


def grade_multi(completion: str, gold: dict) -> tuple:
    """(reward, status) on the multi-answer task. 1 only when the completion holds exactly one answer
    attempt (numbers or vocabulary words, the question's own left out) and it is in the correct set.
    0 and counted: 'no_answer' (none), 'hedge' (several different ones; a pair: more than two numbers),
    'wrong' (one outside the set, also outside the range; a pair: one number only)."""
    found = multi_candidates(completion, gold)
    if not found:
        return 0.0, "no_answer"
    if len(found) > 2 if gold["kind"] == "pair" else len(set(found)) > 1:
        return 0.0, "hedge"
    return (1.0, CORRECT) if one_answer(found, gold["kind"]) in gold["answers"] else (0.0, "wrong")


def answers_task(name: str, rows: list) -> Task:
    grade = lambda completions, golds: [grade_multi(c, g) for c, g in zip(completions, golds)]
    return Task(name, rows, grade, multi_answer, lambda gold: bool(gold["answers"]), instruction="",
                grader="one answer in the correct set (tasks.grade_multi)", answer_set=lambda g: g["answers"])


def multi_file_task(path: str, question_field: str = "question", answer_field: str = "answers",
                    limit: int = 0) -> Task:
    """A multi-answer task from a JSON Lines file: a question and a list of its correct answers per row.
    Numbers when every answer of the file is an integer, else words, whose vocabulary (what counts as an
    answer attempt, so as a hedge) is every answer of the file."""
    raw = read_jsonl(path)[:limit or None]
    lists = [row.get(answer_field) for row in raw]
    for i, (row, answers) in enumerate(zip(raw, lists)):
        if not isinstance(row.get(question_field), str) or not row[question_field].strip():
            raise SystemExit(f"error: {path}: row {i} has no question in {question_field!r}")
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, (str, int)) for a in answers)):
            raise SystemExit(f"error: {path}: row {i}: {answer_field!r} must be a list of answers "
                             f"(strings or integers)")
    every = [str(a).strip() for answers in lists for a in answers]
    kind = "number" if all(re.fullmatch(r"-?\d+", a) for a in every) else "word"
    rows = [{"question": row[question_field], "answer": multi_gold(row[question_field], answers, kind, every)}
            for row, answers in zip(raw, lists)]
    return answers_task(Path(path).stem, rows)


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
            name = next((f for f in fields if row.get(f) not in (None, "", [])), None)
            if name is None:
                there = next((f for f in fields if f in row), None)
                raise SystemExit(f"error: {source}: row {i}: field {there!r} is {json.dumps(row[there])}"
                                 if there else f"error: {source}: row {i} has no field {'/'.join(fields)!r} "
                                               f"(fields: {sorted(row)})")
            picked.append(name)
        question = row[picked[0]]
        if not isinstance(question, str):  # an object or a list would be trained on as its Python repr
            raise SystemExit(f"error: {source}: row {i}: field {picked[0]!r} (the question) is a JSON "
                             f"{type(question).__name__}, not a string")
        out.append({"question": question, "answer": gold(row[picked[1]])})
    return out


def unique_keys(pairs: list) -> dict:
    """json.loads' object_pairs_hook: a key given twice is an error (json.loads would keep the last value)."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError(f"the key {next(k for k in keys if keys.count(k) > 1)!r} is given twice")
    return dict(pairs)


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
            rows.append(json.loads(line, object_pairs_hook=unique_keys))
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: {path}: line {n} is not valid JSON "
                             f"({e.msg}, column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # a key twice; an integer over 4300 digits; nested too deep
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
            raise SystemExit(f"error: {path}: line {n} cannot be read: {why}") from None
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
                            answer=dict(prefix=row["prompt"],
                                        suffix=f"{row['test']}\ncheck({row['entry_point']})",
                                        calls=[row["entry_point"]])))
        else:  # MBPP
            suffix = "\n".join(row["test_list"])
            out.append(dict(question=f"{row['text']}\nYour code should pass this test:\n"
                                     f"{row['test_list'][0]}",
                            answer=dict(prefix=row.get("test_setup_code") or "", suffix=suffix,
                                        calls=called_names(suffix, row.get("code") or ""))))
    return out


def called_names(tests: str, reference: str) -> list:
    """The program's functions MBPP's asserts call: the names they use that the reference solution defines at
    top level (a builtin's name too: task 126's `sum`), or, without one, that nothing here defines."""
    used = {n.id for n in ast.walk(ast.parse(tests)) if isinstance(n, ast.Name)}
    try:
        with warnings.catch_warnings():  # old references' invalid escapes ("\w")
            warnings.simplefilter("ignore")
            defined = {n.name for n in ast.parse(reference).body
                       if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    except SyntaxError:
        defined = set()
    return sorted(used & defined if defined else used - set(dir(builtins)))


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


def file_task(path: str, question_field: str = "question", answer_field: str = "answer",
              limit: int = 0) -> Task:
    """Math problems from a local JSON Lines file (progrpo.py and eval.py --data), named after the file."""
    return math_task(Path(path).stem,
                     read_rows(path, read_jsonl(path), (question_field,), (answer_field,), limit))


def from_flags(name: str, data: str = "", question_field: str = "question", answer_field: str = "answer",
               data_dir: str = "", instruction: str | None = None, limit: int = 0) -> Task:
    """The training task of progrpo.py's (and progrpo_trl.py's) flags: --data's file, the demo, or a named
    set of TASKS; --instruction, when given, replaces the task's own ("" for none)."""
    if data:
        task = (multi_file_task if name == "multi" else file_task)(data, question_field, answer_field, limit)
    else:
        task = (demo_task() if name == "demo" else multi_task() if name == "multi"
                else load_task(name, TASKS, data_dir))
    task.instruction = task.instruction if instruction is None else instruction
    return task


def load_task(name: str, table: dict, data_dir: str = "", limit: int = 0) -> Task:
    rows = load_problems(name, table, data_dir, limit)
    return code_task(name, rows) if name in CODE_SETS else math_task(name, rows)


def math_task(name: str, rows: list) -> Task:
    # once per gold: it may cost a timeout
    gold_ok = functools.cache(lambda gold: rewards.gold_status(gold) == "ok")
    grade = lambda completions, golds: [rewards.grade(c, g) for c, g in zip(completions, golds)]
    return Task(name, rows, grade, lambda c, _: rewards.extract_answer(c), gold_ok, single_answer=True)


def code_task(name: str, rows: list) -> Task:
    """One sandboxed process per program, its tests run here (sandbox.run); a step's programs in parallel."""
    def grade(completions, golds):
        jobs = [None if (code := rewards.extract_code(c)) is None else
                dict(code=code, setup=g["prefix"], tests=g["suffix"], calls=g.get("calls", ())) for c, g in
                zip(completions, golds)]
        return [(float(s == "correct"), s) for s in sandbox.run_many(jobs, CODE_TIMEOUT)]

    # distinct correct programs: compared as normalised ASTs (rewards.normalise_code)
    def program(completion, _gold):
        code = rewards.extract_code(completion)
        return code and rewards.normalise_code(code)
    # runs an empty program: a sandbox that cannot run fails here
    grader = f"sandbox.py, {sandbox.isolation()}"
    return Task(name, rows, grade, program, lambda gold: True, CODE_INSTRUCTION, grader=grader)


# ---------------------------------------------------------------------------------------------
# Diversity among the correct completions of a problem: progrpo.py and progrpo_trl.py log it per step,
# eval.py per benchmark.
def diversity(task: Task | None, correct: list, golds: list | None = None, n: int = 0) -> dict:
    """The diversity metrics from correct[p], problem p's correct completions (of n samples; golds[p] its
    gold): distinct_correct, mean over problems with >= 1 correct (0 when none; left out when task is
    None); reasoning_diversity, mean over problems with >= 2 correct (nan when none); and, for a task with
    answer sets, coverage: a problem's distinct correct answers / min(its correct set's size, n), the
    share of what n samples could find, mean over all problems (unsolved ones count 0)."""
    golds = golds or [None] * len(correct)
    solved = [(texts, g) for texts, g in zip(correct, golds) if texts]
    diverse = [d for texts, _ in solved if (d := reasoning_diversity(texts)) is not None]
    out = {"reasoning_diversity": sum(diverse) / len(diverse) if diverse else math.nan}
    if task is None:
        return out
    out = {"distinct_correct": sum(distinct_correct(task, *s) for s in solved) / max(len(solved), 1)} | out
    if task.answer_set and n and correct:
        out["coverage"] = sum(distinct_correct(task, texts, g) / min(len(task.answer_set(g)), n)
                              for texts, g in zip(correct, golds)) / len(correct)
    return out


def distinct_correct(task: Task, texts: list, gold=None) -> int:
    """Distinct correct answers among `texts`, the correct completions of one problem, as equivalence
    classes: a math answer is correct only when math-verify finds it equal to the gold, so all of them
    are one class (1 when solved); demo pairs, multi-answer answers (normalised) and code programs
    (normalised ASTs) count one by one."""
    return min(len(texts), 1) if task.single_answer else len({task.extract(t, gold) for t in texts})


def reasoning_diversity(texts: list, n: int = 3) -> float | None:
    """1 - the mean pairwise Jaccard similarity of the completions' word n-gram sets (word = a
    whitespace-separated token): 0 when every correct completion says the same, 1 when no two share an
    n-gram. None with fewer than two completions. A text shorter than n words is one n-gram: itself."""
    if len(texts) < 2:
        return None
    grams = [{tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))} for w in (t.split() for t in texts)]
    pairs = [(a, b) for i, a in enumerate(grams) for b in grams[i + 1:]]
    return 1 - sum(len(a & b) / max(len(a | b), 1) for a, b in pairs) / len(pairs)


# ---------------------------------------------------------------------------------------------
# eval.py --validate-grader: do the graders agree with the data sets' own reference solutions?
# Benchmark -> the field of its local copy that holds a worked reference solution. amc23 has none;
# OlympiadBench's solutions are prose with no marked final answer (none of its 675 has a \boxed{}).
SOLUTIONS = {"math500": "solution", "gsm8k": "answer", "minerva_math": "solution", "aime24": "solution",
             "mbpp": "code", "humaneval": "canonical_solution"}


def validate_grader(data_dir: str, names: list) -> dict:
    """Grade each set's reference solutions (and MBPP's training split's) against its gold answers or tests,
    as evaluation reads them; print a markdown table. Returns {set with solutions: Counter of statuses}."""
    if not data_dir:
        raise SystemExit("error: --validate-grader reads reference solutions from --data-dir "
                         "(a folder laid out like ../shared/data)")
    out = {}
    print("| set | graded | agreed | rate | notes |\n|---|---|---|---|---|")
    sets = [(name, BENCHMARKS, name) for name in names]
    if "mbpp" in names:  # and the split that progrpo.py --task mbpp trains on
        sets.append(("mbpp train", TASKS, "mbpp"))
    for label, table, name in sets:
        raw = read_jsonl(Path(data_dir) / table[name][3])
        if name not in SOLUTIONS or any(SOLUTIONS[name] not in r for r in raw):  # e.g. a hub-format copy
            print(f"| {label} | - | - | - | no reference solutions with a final answer |")
            continue
        task = load_task(name, table, data_dir)
        texts = [f"```python\n{r.get('prompt', '')}{r[SOLUTIONS[name]]}\n```" if name in CODE_SETS
                 else r[SOLUTIONS[name]] for r in raw]  # fenced as in completions; HumanEval: prompt + body
        statuses = [status for _, status in task.grade(texts, [row["answer"] for row in task.rows])]
        st = out[label] = Counter(statuses)
        graded = len(raw) - st["bad_gold"]  # a gold answer math-verify cannot parse grades nothing
        notes = ", ".join(f"{s} {c}" for s, c in sorted(st.items()) if s != "correct") or "-"
        if name in CODE_SETS and graded > st["correct"]:
            notes += ": " + ", ".join(f"{r['task_id']} {s}" for r, s in zip(raw, statuses) if s != "correct")
        print(f"| {label} | {graded} | {st['correct']} | {st['correct'] / max(graded, 1):.1%} | {notes} |")
    return out
