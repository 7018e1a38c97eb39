"""tools/gpu_check.py runs blind on a lent GPU: its five steps run here on CPU with tiny shapes (~35 s)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # tools/ is no package
    import gpu_check
    return gpu_check


def test_pytest_counts_reads_the_last_line(gpu_check):
    counts = gpu_check._pytest_counts(["1 failed, 2 passed, 1 skipped, 3 warnings in 9.10s"])
    assert counts == dict(failed=1, passed=2, skipped=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_without_cuda_the_check_says_so(gpu_check, tmp_path):
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check.main(["--out", str(tmp_path / "gpu")])


def test_the_gpu_check_runs_every_step_on_cpu(tmp_path):
    """`python tools/gpu_check.py --device cpu`, as a user starts it (from another folder): one JSON of
    everything."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    p = subprocess.run([sys.executable, ROOT / "tools" / "gpu_check.py", "--device", "cpu", "--out", tmp_path],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["gpu tests", "kernel", "e2e", "random folder", "progrpo"]
    assert all(s["returncode"] == 0 and not s["timed_out"] and s["seconds"] > 0 for s in steps.values()), steps
    assert steps["gpu tests"]["counts"] == {"skipped": 7}  # --device cpu hides any GPU
    assert any(r["method"] == "logprob_kernel.py" for r in steps["kernel"]["result"]["rows"])
    assert [r["quant"] for r in steps["e2e"]["result"]["results"]] == ["bf16"]
    assert [m["step"] for m in steps["progrpo"]["metrics"]] == [1, 2, 3]
    assert len(steps["progrpo"]["seconds_per_step"]) == 3
    assert report["versions"]["torch"] == torch.__version__ and report["wall_s"] > 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "metrics.jsonl"]  # no checkpoint
    assert len((tmp_path / "problems.jsonl").read_text().splitlines()) == 16
