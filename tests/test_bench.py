"""The benchmarks run blind on a lent GPU: keep their code paths working on CPU (tiny shapes). bench.py here,
tools/bench_cpu.py too; tools/gpu_check.py in test_gpu_check.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
STEP_KEYS = {"rollout", "grading", "update (as graded)", "update (all groups mixed)", "skippable"}


def bench(*args):
    return subprocess.run([sys.executable, "bench.py", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_e2e_code_paths_on_cpu(tmp_path):
    out = tmp_path / "e2e.json"
    p = bench("e2e", "--sizes", "tiny", "--quant", "bf16,nf4", "--device", "cpu", "--seqs", 8, "--new-tokens", 4,
              "--step-tokens", 4, "--steps", 1, "--paths", "naive,fast,peft", "--json", out)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dtype"] == "fp32"  # --dtype auto on CPU
    results = report["results"]
    assert [(r["size"], r["quant"]) for r in results] == [("tiny", "bf16"), ("tiny", "nf4")]
    for r in results:
        assert [x["path"] for x in r["rollouts"]] == ["naive (peft, unmerged)", "fast (merged, static)",
                                                      "peft, static cache"]
        assert all(x["tok_s"] > 0 for x in r["rollouts"])
        assert set(r["step_seconds"]) == STEP_KEYS
        assert all(r["step_seconds"][k] > 0 for k in STEP_KEYS - {"skippable"})
        assert 0 <= r["step_seconds"]["skippable"] <= 1
        assert r["step_total_mixed"] == pytest.approx(r["step_seconds"]["rollout"] + r["step_seconds"]["grading"]
                                                      + r["step_seconds"]["update (all groups mixed)"])


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_kernel_code_paths_on_cpu(tmp_path, dtype):
    out = tmp_path / "kernel.json"
    p = bench("kernel", "--device", "cpu", "--n", 37, "--vocab", 1000, "--hidden", 24, "--warmup", 0, "--reps", 1,
              "--dtype", dtype, "--json", out)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["dtype"] == dtype
    assert rows[0]["method"].startswith("lm_head matmuls") and any(r["method"] == "logprob_kernel.py" for r in rows)
    check = next(r["check"] for r in rows if r["method"] == "logprob_kernel.py")  # against the naive path
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


def test_cpu_sampling_benchmark_on_a_saved_model(tiny_folder, tmp_path, monkeypatch):
    """`tools/bench_cpu.py` on the tiny model saved as a folder (in-process: an interpreter start costs ~8 s)."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # tools/ is no package
    import bench_cpu
    out = tmp_path / "cpu.json"
    bench_cpu.main(["--model", str(tiny_folder), "--new-tokens", "2", "--reps", "1", "--prompts", "1,2",
                    "--samples", "2", "--threads", "1,all", "--json", str(out)])
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["dtype"] == "fp32"
    assert {(r["policy"], r["threads"], r["cache"], r["prompts"]) for r in rows} == {
        (policy, threads, cache, prompts) for policy in ("peft (unmerged)", "generation copy")
        for threads in (1, os.cpu_count()) for cache in ("dynamic", "static") for prompts in (1, 2)}
    for r in rows:  # 2 new tokens at most per sample, at least 1 (a sample may stop at EOS)
        assert r["prompts"] * 2 <= r["tokens"] <= r["prompts"] * 2 * 2 and r["tok_s"] > 0 and r["samples"] == 2


def test_step_benchmark_on_a_saved_model(tiny_folder, tmp_path):
    """`bench.py step` (the trainer's own step, by phase) on the tiny model saved as a folder, in-process."""
    import bench
    out = tmp_path / "step.json"
    bench.main(["step", "--model", str(tiny_folder), "--prompts", "2", "--step-tokens", "2", "--steps", "1",
                "--micro-batch", "5", "--json", str(out)])
    report = json.loads(out.read_text())
    split = report["median"]
    assert report["dtype"] == "fp32" and set(split) == STEP_KEYS and len(report["steps"]) == 1
    assert split["skippable"] == 1.0  # the tiny model answers no GSM8K problem: every group all wrong
    assert all(split[k] > 0 for k in ("rollout", "update (as graded)", "update (all groups mixed)"))
