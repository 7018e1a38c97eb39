"""eval.py: the Pass@k estimator, evaluate() on the tiny demo model, adapter resolution, the CLI
(run, --compare, argument errors) and the grader validation on real reference solutions."""
import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from conftest import noise

import common
import eval as ev
import tasks

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "eval.py"), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- pass@k


def brute_force(n, c, k):
    """Share of the k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert ev.pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_endpoints_and_monotone():
    for n in (1, 5, 16, 33):
        for c in range(n + 1):
            assert ev.pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
            assert ev.pass_at_k(n, c, n) == (1.0 if c > 0 else 0.0)
            values = [ev.pass_at_k(n, c, k) for k in range(1, n + 1)]
            assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))


def test_pass_at_k_large_n_is_exact():
    n = 1024  # C(1024, 512) ~ 1e306: the binomial form would overflow floats
    for c in (0, 1, 7, 512, 1000, 1023, 1024):
        for k in (1, 2, 10, 100, 512, 1023, 1024):
            got = ev.pass_at_k(n, c, k)
            exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
            assert math.isfinite(got) and 0.0 <= got <= 1.0
            assert got == pytest.approx(float(exact), abs=1e-9), (c, k)


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 1, 0), (1, 0, 2), (4, 5, 1), (4, -1, 1)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass@|impossible"):
        ev.pass_at_k(n, c, k)


def test_parse_ks():
    assert ev.parse_ks("", 32) == [1, 2, 4, 8, 16, 32]
    assert ev.parse_ks("", 12) == [1, 2, 4, 8, 12]
    assert ev.parse_ks("", 1) == [1]
    assert ev.parse_ks("4,1,2,2", 4) == [1, 2, 4]
    for spec, n in [("1,8", 4), ("0", 4), ("a,b", 4), ("1,,2", 4), ("1", 0)]:
        with pytest.raises(SystemExit, match="error: --"):
            ev.parse_ks(spec, n)


# ---------------------------------------------------------------- evaluate() on the tiny model


@pytest.fixture(scope="module")
def tiny():
    return common.load_model("tiny", "cpu")


@pytest.fixture(scope="module")
def demo_result(tiny):
    model, tok = tiny
    task = tasks.demo_task()
    task.gold_ok = lambda gold: gold != "?"  # one extra problem whose gold "cannot be parsed": it must be skipped
    task.rows = task.rows + [{"question": "sum 5", "answer": "?"}]
    torch.manual_seed(0)
    return ev.evaluate(model, tok, task, n=6, ks=[1, 2, 3, 6], max_new_tokens=3, batch_prompts=3, progress=False)


def test_evaluate_structure_and_ranges(demo_result, tiny):
    r, n = demo_result, 6
    s = r["summary"]
    assert r["task"] == "demo" and r["n"] == n and r["ks"] == [1, 2, 3, 6]
    assert s["problems"] == len(r["problems"]) == len(tasks.DEMO_TARGETS) and s["skipped_gold"] == 1
    assert all(isinstance(v, (int, float)) for v in s.values())  # flat: loggable as is
    passes = [s[f"pass@{k}"] for k in r["ks"]]
    assert all(0.0 <= p <= 1.0 for p in passes) and passes == sorted(passes)
    for pr in r["problems"]:
        assert pr["n"] == n
        assert len(pr["answers"]) == len(pr["confidences"]) == len(pr["lengths"]) == len(pr["statuses"]) == n
        assert pr["c"] == pr["statuses"].count("correct")
        assert set(pr["statuses"]) <= {"correct", "wrong"}  # the demo grader's two statuses
        assert all(0.0 < c <= 1.0 for c in pr["confidences"]) and all(1 <= t <= 3 for t in pr["lengths"])
        assert all(a is not None for a, st in zip(pr["answers"], pr["statuses"]) if st == "correct")
    # pass@1 is the plain accuracy, pass@n the share of solved problems
    P = s["problems"]
    assert s["pass@1"] == pytest.approx(sum(pr["c"] for pr in r["problems"]) / (P * n))
    assert s["pass@6"] == pytest.approx(s["solved"] / P)
    assert 1.0 <= s["length"] <= 3.0 and 0.0 < s["token_prob"] <= 1.0
    assert 0.0 < s["entropy"] <= math.log(len(tiny[1])) + 1e-4  # at most log V
    assert 0.0 <= s["conf_var"] <= 0.25  # values in [0, 1] have variance at most 1/4
    assert s["solved"] == 0 or 1.0 <= s["distinct_correct"] <= n
    json.dumps(r)  # the result is JSON as it stands


def test_evaluate_is_seeded_and_checks_k_first(tiny):
    model, tok = tiny
    task = tasks.demo_task()
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(ev.evaluate(model, tok, task, 4, [1, 4], 2, progress=False)["problems"])
    assert runs[0] == runs[1]
    t0 = time.time()
    with pytest.raises(ValueError, match="pass@5"):
        ev.evaluate(model, tok, task, 4, [1, 5], 2, progress=False)
    assert time.time() - t0 < 1.0  # before any sampling


def test_adapter_from_run_folder(tiny, tmp_path):
    model, _ = tiny
    run = tmp_path / "run"
    for step in (10, 20):  # progrpo.py's layout: config.json and zero-padded ckpt-* folders
        model.save_pretrained(run / f"ckpt-{step:06d}")
    (run / "config.json").write_text(json.dumps({"model": "tiny"}))
    assert ev.resolve_adapter(str(run), "tiny") == str(run / "ckpt-000020")
    assert ev.resolve_adapter(str(run / "ckpt-000010"), "tiny") == str(run / "ckpt-000010")
    assert ev.resolve_adapter("", "tiny") == ""
    with pytest.raises(SystemExit, match="trained on --model tiny"):
        ev.resolve_adapter(str(run), "Qwen2.5-1.5B")
    with pytest.raises(SystemExit, match="neither an adapter folder"):
        ev.resolve_adapter(str(tmp_path), "tiny")
    loaded, tok = common.load_model("tiny", "cpu", adapter=ev.resolve_adapter(str(run), "tiny"))
    task = ev.load_task("demo", limit=2)
    assert ev.evaluate(loaded, tok, task, 2, [1, 2], 2, progress=False)["summary"]["problems"] == 2


# ---------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "a.json"
    proc = run_cli("--model", "tiny", "--benchmarks", "demo", "--n", "4", "--k", "1,2,4", "--out", str(out))
    return proc, out


def test_cli_writes_result(cli_run):
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert noise(proc.stderr) == []  # only its progress bar: no library warnings
    result = json.loads(out.read_text())
    demo = result["benchmarks"]["demo"]
    assert result["config"]["n"] == 4 and demo["ks"] == [1, 2, 4]
    assert len(demo["problems"]) == len(tasks.DEMO_TARGETS)
    assert all(len(pr["statuses"]) == 4 for pr in demo["problems"])
    assert "| Pass@4 |" in proc.stdout and f"saved {out}" in proc.stdout


def test_cli_compare_prints_runs_and_plots(cli_run, tmp_path):
    _, a = cli_run
    b = tmp_path / "b.json"
    shutil.copy(a, b)
    png = tmp_path / "c.png"
    proc = run_cli("--compare", str(a), str(b), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "### demo" in proc.stdout and "| metric | a | b |" in proc.stdout
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in proc.stdout
    else:
        assert png.stat().st_size > 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_compare_without_matplotlib(cli_run, tmp_path, monkeypatch, capsys):
    _, a = cli_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    ev.compare([str(a)], str(tmp_path / "c.png"))
    out = capsys.readouterr().out
    assert "| Pass@1 |" in out and "matplotlib is not installed" in out
    assert not (tmp_path / "c.png").exists()


def test_cli_bad_k_is_one_line_and_quick(tmp_path):
    t0 = time.time()
    proc = run_cli("--n", "4", "--k", "1,8", cwd=tmp_path)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip() == "error: --k 8 with --n 4: Pass@k needs 1 <= k <= n samples per problem"
    assert time.time() - t0 < 20  # no model is loaded
    assert not list(tmp_path.iterdir())  # and nothing written


@pytest.mark.parametrize("args, message", [
    (["--benchmarks", "nope"], "error: unknown benchmark 'nope'"),
    (["--compare", "missing.json"], "error: --compare missing.json: not a readable eval.py result"),
    (["--adapter", "no/such/run"], "error: --adapter no/such/run: neither an adapter folder"),
])
def test_cli_argument_errors(args, message, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["eval.py", *args])
    with pytest.raises(SystemExit) as e:
        ev.main()
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# ---------------------------------------------------------------- grader validation on real data


def test_validate_grader_on_small_real_sets(shared_data, capsys):
    st = tasks.validate_grader(str(shared_data), ["minerva_math", "aime24", "amc23"])
    out = capsys.readouterr().out
    # Minerva: the gold is the solution's own boxed answer, so every parseable gold must agree
    # (measured: 264/264; 8 golds are not parseable math, such as np.arcsin(10/13), or only parsed
    # by pulling a number or an undefined value out of a longer expression).
    assert st["minerva_math"]["bad_gold"] <= 8
    assert st["minerva_math"]["correct"] == 272 - st["minerva_math"]["bad_gold"]
    # AIME: AoPS solution texts, boxed in several styles (\boxed{104.}, \textbf{(073)}, \framebox): 30/30.
    assert st["aime24"]["correct"] == 30 and st["aime24"]["bad_gold"] == 0
    assert "| amc23 | - | - | - | no reference solutions" in out
    with pytest.raises(SystemExit, match="--data-dir"):
        tasks.validate_grader("", ["aime24"])
