"""End to end: the trainer as a user runs it, in a subprocess, on the offline demo."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import noise

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def train(*args, check=True):
    p = subprocess.run([sys.executable, "progrpo.py", "--sample-every", "0", *map(str, args)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def strict(constant):
    raise ValueError(f"{constant} in metrics.jsonl: strict JSON parsers reject it")


def metrics(run: Path) -> list:
    return [json.loads(line, parse_constant=strict) for line in (run / "metrics.jsonl").read_text().splitlines()]


def mean(rows, key):  # over the steps that measured it (entropy is null when every group was all wrong)
    values = [m[key] for m in rows if m[key] is not None]
    return sum(values) / len(values)


def test_demo_two_steps_writes_metrics_config_and_a_loadable_adapter(tmp_path):
    p = train("--steps", 2, "--out", tmp_path, "--eval-every", 2, "--eval-n", 4)
    assert "summary" in p.stdout and "step    2/2" in p.stdout and "eval demo: pass@1" in p.stdout
    assert noise(p.stderr) == [] and "steps: 100%|" in p.stderr  # only its own progress bar
    rows = metrics(tmp_path)
    assert [m["step"] for m in rows] == [1, 2]
    assert "eval/demo/pass@1" not in rows[0] and 0 <= rows[1]["eval/demo/pass@1"] <= rows[1]["eval/demo/pass@4"] <= 1
    for key in ("reward", "accuracy", "entropy", "distinct_correct", "arm_shift", "clip_frac", "all_correct"):
        assert all(isinstance(m[key], float) for m in rows), key
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 2
    ckpt = tmp_path / "ckpt-000002"
    assert {"adapter_config.json", "adapter_model.safetensors", "state.pt"} <= {f.name for f in ckpt.iterdir()}
    from peft import PeftModel

    import common
    base, _ = common.tiny_model()
    model = PeftModel.from_pretrained(base, str(ckpt))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())  # trained, not the init


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train("--steps", 4, "--save-every", 2, "--out", whole)
    train("--steps", 2, "--out", split)
    p = train("--resume", split, "--steps", 4)
    assert "resuming at step 2" in p.stdout
    a, b = metrics(whole), metrics(split)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):  # same prompts, same samples, same updates as the uninterrupted run
        assert x["reward"] == y["reward"] and abs(x["entropy"] - y["entropy"]) < 1e-5, (x, y)
    assert sorted(f.name for f in split.glob("ckpt-*")) == ["ckpt-000004"]


def test_ctrl_c_saves_and_resume_picks_up(tmp_path):
    proc = subprocess.Popen([sys.executable, "progrpo.py", "--steps", "100000", "--save-every", "100000",
                             "--sample-every", "0", "--out", str(tmp_path)],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            (tmp_path / "metrics.jsonl").exists() and len(metrics(tmp_path)) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    ckpt = sorted(tmp_path.glob("ckpt-*"))
    assert len(ckpt) == 1 and "interrupted after step" in out
    done = int(ckpt[0].name.split("-")[1])
    assert done >= 3 and metrics(tmp_path)[-1]["step"] == done  # the step in flight was finished, not lost
    train("--resume", tmp_path, "--steps", done + 1)
    assert [m["step"] for m in metrics(tmp_path)] == list(range(1, done + 2))


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The default demo (300 steps) for GRPO (alpha = 0) and ProGRPO (alpha = 1) over three seeds."""
    root = tmp_path_factory.mktemp("demo")
    runs = {}
    for seed in (1, 2, 3):
        for alpha in (0.0, 1.0):
            out = root / f"a{alpha}-s{seed}"
            train("--alpha", alpha, "--seed", seed, "--out", out)
            runs[alpha, seed] = metrics(out)
    return runs


def test_reward_rises_on_the_demo(demo_runs):
    for (alpha, seed), rows in demo_runs.items():
        assert mean(rows[:10], "accuracy") < 0.15, (alpha, seed)
        assert mean(rows[-50:], "accuracy") > 0.75, (alpha, seed, mean(rows[-50:], "accuracy"))


def test_progrpo_keeps_more_distinct_correct_answers_than_grpo(demo_runs):
    """The paper's claim in miniature: over the last 50 steps, more distinct correct answers per
    prompt and higher entropy at comparable accuracy."""
    last = {k: rows[-50:] for k, rows in demo_runs.items()}
    agg = {a: {key: sum(mean(last[a, s], key) for s in (1, 2, 3)) / 3 for key in ("accuracy", "entropy", "distinct_correct")}
           for a in (0.0, 1.0)}
    grpo, pro = agg[0.0], agg[1.0]
    assert pro["distinct_correct"] > 1.25 * grpo["distinct_correct"], agg
    assert pro["entropy"] > grpo["entropy"], agg
    assert pro["accuracy"] > grpo["accuracy"] - 0.05, agg
    for seed in (1, 2, 3):  # and on every seed, not only on average
        assert mean(last[1.0, seed], "distinct_correct") > mean(last[0.0, seed], "distinct_correct"), seed


@pytest.mark.parametrize("args, message", [
    (["--model", "NoSuchModel"], "unknown model"),
    (["--model", "someorg/no-such-model", "--task", "demo"], "cannot load model 'someorg/no-such-model'"),
    (["--task", "nosuchtask"], "unknown data set"),
    (["--data", "/nonexistent/problems.jsonl"], "No such file or directory"),
    (["--group-size", "1"], "--group-size 1: must be an integer >= 2"),
    (["--resume", "/nonexistent/run"], "no config.json"),
    (["--no-such-flag", "1"], "unknown argument '--no-such-flag'"),
    (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
])
def test_bad_input_is_one_clear_line(args, message):
    p = train(*args, "--steps", 1, check=False)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_unmappable_row_names_file_row_and_field(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "solution": "4"}\n')
    p = train("--data", data, "--steps", 1, "--out", tmp_path / "run", check=False)
    assert p.returncode != 0 and f"{data}: row 1 has no field 'answer'" in p.stderr


def test_real_gsm8k_rows_through_the_math_grader(tmp_path, shared_data):
    """The math path end to end (data mapping, prompt, math-verify grading) with the tiny model."""
    p = train("--task", "gsm8k", "--data-dir", shared_data, "--steps", 1, "--max-new-tokens", 4,
              "--prompts-per-step", 2, "--group-size", 2, "--out", tmp_path)
    assert "7473 problems" in p.stdout
    (m,) = metrics(tmp_path)
    assert m["accuracy"] == 0.0 and m["no_answer"] == 4  # a random tiny model writes no \boxed{}


def test_every_variant_flag_runs(tmp_path):
    """KL to the adapter-free reference, several updates per batch, seq-mean, mixed-only ARM,
    Dr.GRPO scaling, micro-batches and the plain peft sampling path, in one short run."""
    p = train("--steps", 3, "--out", tmp_path, "--beta", 0.1, "--updates-per-batch", 2, "--loss-agg", "seq-mean",
              "--arm-groups", "mixed", "--scale-rewards", "none", "--micro-batch", 16, "--no-fast-generation",
              "--lr", 0.02)
    assert "sampling from the peft model" in p.stdout and "| kl " in p.stdout
    rows = metrics(tmp_path)
    assert rows[0]["kl"] == 0.0  # LoRA starts at B = 0: the policy is the reference
    assert rows[-1]["kl"] > 0 and any(m["clip_frac"] > 0 for m in rows)  # the second update is off-policy


def test_runs_plot_draws_curves_of_several_runs(tmp_path):
    """python runs.py --plot: two short demo runs (alpha 0 and 1) and a second seed of one: a valid PNG, every
    run read, the legend naming what differs; a folder without metrics, or with an empty one, is one line."""
    procs = [subprocess.Popen([sys.executable, "progrpo.py", "--steps", "3", "--alpha", str(alpha), "--seed", str(seed),
                               "--out", str(tmp_path / name)], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
             for name, alpha, seed in (("a", 0, 0), ("b", 1, 0), ("c", 1, 1))]  # at once: each is mostly start-up
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    plot = lambda *args: subprocess.run([sys.executable, "runs.py", *map(str, args)], cwd=ROOT, env=ENV,
                                        capture_output=True, text=True, timeout=300)
    p = plot("--plot", tmp_path / "c.png", "--runs", tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = p.stdout.splitlines()
    assert lines[0] == f"alpha 0.0 (seed 0): {tmp_path / 'a'}" and lines[1] == f"alpha 1.0 (seeds 0, 1): {tmp_path / 'b'}, {tmp_path / 'c'}"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    for folder, message in (("none", "no readable config.json and metrics.jsonl"), ("empty", "metrics.jsonl is empty")):
        p = plot("--plot", tmp_path / "d.png", "--runs", tmp_path / "a", tmp_path / folder)
        assert p.returncode == 1 and p.stderr.strip().startswith(f"error: {tmp_path / folder}") and message in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "d.png").exists()
    p = plot("--plot", tmp_path, "--runs", tmp_path / "a")
    assert p.returncode == 1 and p.stderr.strip() == f"error: --plot {tmp_path}: give a file name ending in .png"
