"""The benchmarks run blind on a lent GPU: keep their code paths working on CPU (tiny shapes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def bench(*args):
    return subprocess.run([sys.executable, "bench.py", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_e2e_code_paths_on_cpu(tmp_path):
    out = tmp_path / "e2e.json"
    p = bench("e2e", "--sizes", "tiny", "--quant", "bf16,nf4", "--device", "cpu", "--seqs", 8, "--new-tokens", 4,
              "--step-tokens", 4, "--steps", 1, "--json", out)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [(r["size"], r["quant"]) for r in results] == [("tiny", "bf16"), ("tiny", "nf4")]
    for r in results:
        assert {x["path"] for x in r["rollouts"]} == {"naive (peft, unmerged)", "fast (merged, static)"}
        assert all(x["tok_s"] > 0 for x in r["rollouts"])
        assert set(r["step_seconds"]) == {"sync copy", "rollout", "scoring", "skippable", "two passes: old pass",
                                          "two passes: update", "one forward: update"}


def test_kernel_code_paths_on_cpu(tmp_path):
    out = tmp_path / "kernel.json"
    p = bench("kernel", "--device", "cpu", "--n", 37, "--vocab", 1000, "--hidden", 24, "--warmup", 0, "--reps", 1,
              "--json", out)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["method"].startswith("lm_head matmuls") and any(r["method"] == "logprob_kernel.py" for r in rows)
    check = next(r["check"] for r in rows if r["method"] == "logprob_kernel.py")  # against the naive path, bf16
    assert check["logp"] < 1e-4 and check["entropy"] < 1e-4 and check["grad"] < 2e-2, check


def test_without_cuda_a_gpu_benchmark_says_so_in_one_line():
    for sub in ("kernel", "e2e"):
        p = bench(sub)
        assert p.returncode == 1 and "no CUDA device" in p.stderr.strip().splitlines()[-1]


@pytest.fixture
def tiny_folder(tmp_path):
    """The tiny model and tokenizer saved as a folder, as a real model would be."""
    import common
    model, tok = common.tiny_model()
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_cpu_sampling_benchmark_on_a_saved_model(tiny_folder, tmp_path):
    """`bench.py cpu` on the tiny model saved as a folder (in-process: an interpreter start costs ~8 s)."""
    import bench
    out = tmp_path / "cpu.json"
    bench.main(["cpu", "--model", str(tiny_folder), "--new-tokens", "2", "--reps", "1", "--prompts", "1,2",
                "--samples", "2", "--threads", "1,all", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {(r["policy"], r["threads"], r["cache"], r["prompts"]) for r in rows} == {
        (policy, threads, cache, prompts) for policy in ("peft (unmerged)", "generation copy")
        for threads in (1, os.cpu_count()) for cache in ("dynamic", "static") for prompts in (1, 2)}
    for r in rows:  # 2 new tokens at most per sample, at least 1 (a sample may stop at EOS)
        assert r["prompts"] * 2 <= r["tokens"] <= r["prompts"] * 2 * 2 and r["tok_s"] > 0 and r["samples"] == 2


def test_the_gpu_check_runs_every_step_on_cpu(tmp_path):
    """`bench.py check --device cpu`: the GPU check's five steps with tiny shapes (~35 s), one JSON of everything."""
    import bench
    counts = bench._pytest_counts(["1 failed, 2 passed, 1 skipped, 3 warnings in 9.10s"])
    assert counts == dict(failed=1, passed=2, skipped=1)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            bench.main(["check", "--out", str(tmp_path / "gpu")])
    bench.main(["check", "--device", "cpu", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["gpu tests", "kernel", "e2e", "random folder", "progrpo"]
    assert all(s["returncode"] == 0 and not s["timed_out"] and s["seconds"] > 0 for s in steps.values()), steps
    assert steps["gpu tests"]["counts"] == {"skipped": 4}  # --device cpu hides any GPU
    assert any(r["method"] == "logprob_kernel.py" for r in steps["kernel"]["result"]["rows"])
    assert [r["quant"] for r in steps["e2e"]["result"]["results"]] == ["bf16"]
    assert [m["step"] for m in steps["progrpo"]["metrics"]] == [1, 2, 3]
    assert len(steps["progrpo"]["seconds_per_step"]) == 3
    assert report["versions"]["torch"] == torch.__version__ and report["wall_s"] > 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "metrics.jsonl"]  # no checkpoint
    assert len((tmp_path / "problems.jsonl").read_text().splitlines()) == 16


def test_step_benchmark_on_a_saved_model(tiny_folder, tmp_path):
    """`bench.py step` (before / after one forward) on the tiny model saved as a folder, in-process."""
    import bench
    out = tmp_path / "step.json"
    bench.main(["step", "--model", str(tiny_folder), "--prompts", "2", "--step-tokens", "2", "--steps", "1",
                "--micro-batch", "5", "--json", str(out)])
    split = json.loads(out.read_text())["median"]
    assert split["skippable"] == 1.0  # the tiny model answers no GSM8K problem: every group all wrong
    assert all(split[k] > 0 for k in ("rollout", "two passes: old pass", "two passes: update", "one forward: update"))
