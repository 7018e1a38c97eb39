"""Reliability: every bad input is one clear line and touches nothing, a run folder never holds two
runs, signals and kills never lose a step's checkpoint, no NaN is trained on, saved or written.

Most cases call progrpo.main / eval.main in-process: an interpreter start costs ~8 s here (torch,
transformers, bitsandbytes), and the checks run before any model loads. Whatever needs real
processes (signals, a lock held by a live process, runs started together) runs in subprocesses.
"""
import errno
import gc
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import arm
import cli
import common
import eval as ev
import progrpo
import runs
import tasks

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_train import ENV, metrics, train  # noqa: E402


def one_line_error(main, *argv) -> str:
    """Run a CLI's main in-process; it must stop with a one-line 'error: ...' (no traceback)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


pytestmark = pytest.mark.usefixtures("keep_signal_handlers")  # in-process runs of progrpo.main (conftest)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 2-step demo run, made in-process; tests work on copies of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    progrpo.main(["--steps", "2", "--out", str(out), "--sample-every", "0"])
    for s, handler in saved.items():
        signal.signal(s, handler)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize("argv, message", [
    (["--temperature", 0], "--temperature 0.0: must be a number > 0"),  # greedy: the loss would divide by 0
    (["--temperature", -1], "--temperature -1.0: must be a number > 0"),  # negated logits
    (["--arm-low-frac", 1.5], "--arm-low-frac 1.5: must be a number in (0, 1]"),
    (["--arm-low-frac", 0], "--arm-low-frac 0.0: must be a number in (0, 1]"),
    (["--alpha", "nan"], "--alpha nan: must be a number >= 0"),
    (["--alpha", "inf"], "--alpha inf: must be a number >= 0"),
    (["--max-grad-norm", -1], "--max-grad-norm -1.0: must be a number > 0"),  # would flip the gradient
    (["--steps", 0], "--steps 0: must be an integer >= 1"),
    (["--prompts-per-step", 0], "--prompts-per-step 0: must be an integer >= 1"),
    (["--group-size", 1], "--group-size 1: must be an integer >= 2"),
    (["--save-every", 0], "--save-every 0: must be an integer >= 1"),
    (["--updates-per-batch", 0], "--updates-per-batch 0: must be an integer >= 1"),
    (["--lr", 0], "--lr 0.0: must be a number in (0, 1]"),
    (["--lr", -0.5], "--lr -0.5: must be a number in (0, 1]"),
    (["--lr", "nan"], "--lr nan: must be a number in (0, 1]"),
    (["--top-p", 0], "--top-p 0.0: must be a number in (0, 1]"),
    (["--top-p", 1.5], "--top-p 1.5: must be a number in (0, 1]"),
    (["--max-new-tokens", 0], "--max-new-tokens 0: must be an integer >= 1"),
    (["--micro-batch", -1], "--micro-batch -1: must be an integer >= 0"),
    (["--lora-rank", 0], "--lora-rank 0: must be an integer >= 1"),
    (["--clip-low", 1], "--clip-low 1.0: must be a number in [0, 1)"),
    (["--beta", -0.1], "--beta -0.1: must be a number >= 0"),
    (["--eval-n", 0], "--eval-n 0: must be an integer >= 1"),
    (["--seed", -1], "--seed -1: must be an integer >= 0"),
    (["--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["--arm-groups", "some"], "argument --arm_groups/--arm-groups: invalid choice: 'some'"),
    (["--bogus", 1], "unknown argument '--bogus'"),
])
def test_bad_flag_is_one_line_before_anything_loads(argv, message, tmp_path):
    t0 = time.time()
    assert message in one_line_error(progrpo.main, *argv, "--out", tmp_path / "run")
    assert time.time() - t0 < 2 and not (tmp_path / "run").exists()  # no model, no data, no folder


def test_wandb_flag_without_wandb(tmp_path, monkeypatch):
    monkeypatch.setattr(progrpo.importlib.util, "find_spec", lambda name: None)
    assert "--wandb needs the wandb package" in one_line_error(progrpo.main, "--wandb", "--out", tmp_path / "r")


# ---------------------------------------------------------------- data files


@pytest.mark.parametrize("content, message", [
    (b"", "holds no rows"),
    (b"\n  \n", "holds no rows"),
    (b'{"question": "a", "answer": "1"}\n\n{"question": "b" "answer": "2"}\n', "line 3 is not valid JSON"),
    (b'[{"question": "a", "answer": "1"}]\n', "line 1 is a JSON list, not an object"),
    (b'{"question": "a", "answer": "1"}\n"text"\n', "line 2 is a JSON str, not an object"),
    (b'{"question": "a", "answer": "1"}\n{"question": "b\xff", "answer": "2"}\n', "line 2 is not UTF-8 text"),
    (b'{"question": "a", "answer": null}\n', "row 0: field 'answer' is null"),
    (b'{"question": "a", "answer": ""}\n', "row 0: field 'answer' is \"\""),
    (b'{"question": "a"}\n', "row 0 has no field 'answer'"),
    (b'{"question": "' + b"sum " * 300 + b'", "answer": "1"}\n', "which with --max-new-tokens 2 exceeds the "
                                                               "model's context of 256"),
    (b'{"question": "a", "answer": ' + b"7" * 5000 + b'}\n', "line 1 cannot be read: Exceeds the limit (4300 digits)"),
    (b'{"question": "a", "answer": ' + b"[" * 100_000 + b"]" * 100_000 + b'}\n', "line 1 cannot be read: nested too "
                                                                             "deeply"),
    (b'{"question": "a", "answer": "1"}\n{"question": "b", "answer": "2", "answer": "3"}\n',
     "line 2 cannot be read: the key 'answer' is given twice"),  # json.loads would keep the last value
    (b'{"question": {"text": "a"}, "answer": "1"}\n', "row 0: field 'question' (the question) is a JSON dict, "
                                                      "not a string"),  # not trained on as its repr
])
def test_bad_data_file_is_one_line_naming_file_and_line(content, message, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_bytes(content)
    got = one_line_error(progrpo.main, "--data", data, "--max-new-tokens", 2, "--out", tmp_path / "run")
    assert str(data) in got and message in got
    assert not (tmp_path / "run").exists()


def test_data_path_that_is_a_folder_or_missing(tmp_path):
    assert "Is a directory" in one_line_error(progrpo.main, "--data", tmp_path, "--out", tmp_path / "run")
    assert "No such file" in one_line_error(progrpo.main, "--data", tmp_path / "no.jsonl", "--out", tmp_path / "r")


def test_lora_targets_the_model_lacks(tmp_path):
    message = one_line_error(progrpo.main, "--lora-targets", "q_proj,no_such_proj", "--out", tmp_path / "run")
    assert "--lora-targets q_proj,no_such_proj: the model has no module 'no_such_proj'" in message
    assert not (tmp_path / "run").exists()


def test_byte_order_mark_is_read_as_utf8(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"question": "1+1?", "answer": "2"}\n')
    assert tasks.read_jsonl(data) == [{"question": "1+1?", "answer": "2"}]


@pytest.mark.parametrize("value", [True, False, {"a": 1}, [[1, 2]], None])
def test_answers_of_the_wrong_json_type_are_bad_golds(value):
    assert tasks.gold(value) is None  # skipped and counted, never graded (`true` once matched `rtue`)


# ---------------------------------------------------------------- run folders


def test_out_on_an_existing_run_points_to_resume(run_copy):
    before = snapshot(run_copy)
    assert f"--out {run_copy} is not an empty folder: continue its run with --resume {run_copy}" in one_line_error(
        progrpo.main, "--out", run_copy)
    assert snapshot(run_copy) == before


def test_out_that_cannot_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is not an empty folder" in one_line_error(progrpo.main, "--out", tmp_path / "file")
    assert "is not an existing, writable folder" in one_line_error(progrpo.main, "--out", tmp_path / "file" / "run")


def test_default_folders_are_unique_even_in_the_same_second(tmp_path):
    base = str(tmp_path / "runs" / "tiny-demo-20260101-000000")
    folders = [runs.unique_folder(base) for _ in range(3)]
    assert [f.name for f in folders] == ["tiny-demo-20260101-000000", "tiny-demo-20260101-000000-2",
                                         "tiny-demo-20260101-000000-3"]


def corrupt(run: Path, what: str):
    ckpt = runs.last_checkpoint(run)
    if what == "config":
        (run / "config.json").write_text('{"model": "tiny", "steps": ')
    elif what == "state":
        (ckpt / "state.pt").write_bytes(b"not a torch file")
    elif what == "adapter":
        (ckpt / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    elif what == "metrics":
        (run / "metrics.jsonl").write_text('{"step": 1, "rew\n{"step": 2}\n')


@pytest.mark.parametrize("what, argv, message", [
    ("config", [], "config.json is not a readable progrpo.py config"),
    ("state", [], "state.pt is unreadable"),
    ("adapter", [], "cannot load the LoRA adapter in"),
    ("metrics", [], "metrics.jsonl: line 1 is corrupt"),
    (None, ["--alpha", 2], "--alpha 2.0 differs from the run's 1.0"),
    (None, ["--lr", 1e-5], "--lr 1e-05 differs from the run's 0.001"),
    (None, ["--data", "x.jsonl"], "--data x.jsonl differs from the run's"),
    (None, ["--steps", 1], "--steps 1 is below the checkpoint's step 2"),
])
def test_resume_refuses_and_touches_nothing(run_copy, what, argv, message):
    if what:
        corrupt(run_copy, what)
    before = snapshot(run_copy)
    assert message in one_line_error(progrpo.main, "--resume", run_copy, *argv)
    assert snapshot(run_copy) == before


def test_resume_of_a_run_killed_before_its_first_checkpoint(run_copy, capsys):
    shutil.rmtree(runs.last_checkpoint(run_copy))  # config.json and metrics.jsonl, no ckpt-*
    progrpo.main(["--resume", str(run_copy), "--sample-every", "0"])
    assert "no checkpoint (ckpt-*) there yet; restarting the run from step 0" in capsys.readouterr().out
    assert [m["step"] for m in metrics(run_copy)] == [1, 2] and runs.last_checkpoint(run_copy).name == "ckpt-000002"


def test_resume_finds_a_relative_data_path_from_another_folder_and_refuses_changed_data(tmp_path, monkeypatch):
    (tmp_path / "other").mkdir()
    data = tmp_path / "p.jsonl"
    data.write_text('{"question": "sum 1 2", "answer": "3"}\n{"question": "sum 2 2", "answer": "4"}\n')
    monkeypatch.chdir(tmp_path)
    progrpo.main(["--data", "p.jsonl", "--steps", "1", "--out", "run", "--sample-every", "0"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == str(data) and len(config["data_sha256"]) == 64
    monkeypatch.chdir(tmp_path / "other")  # the same file, named absolutely here: not a changed flag
    progrpo.main(["--resume", str(tmp_path / "run"), "--data", str(data), "--steps", "2"])
    assert [m["step"] for m in metrics(tmp_path / "run")] == [1, 2]
    data.write_text('{"question": "sum 1 2", "answer": "4"}\n')
    before = snapshot(tmp_path / "run")
    assert f"--data {data} has changed since the run started" in one_line_error(
        progrpo.main, "--resume", tmp_path / "run", "--steps", 3)
    assert snapshot(tmp_path / "run") == before


def test_resume_of_a_missing_folder():
    assert "no config.json there" in one_line_error(progrpo.main, "--resume", "/nonexistent/run")


def test_resume_with_the_same_values_and_more_steps(run_copy):
    (run_copy / ".tmp-ckpt-000009").mkdir()  # left by a kill mid-save: removed at start
    progrpo.main(["--resume", str(run_copy), "--steps", "3", "--alpha", "1.0", "--sample-every", "0"])
    assert [m["step"] for m in metrics(run_copy)] == [1, 2, 3]
    assert sorted(p.name for p in run_copy.iterdir() if p.name != ".lock") == ["ckpt-000003", "config.json",
                                                                              "metrics.jsonl"]


# ---------------------------------------------------------------- NaN never trained on, saved or written


def test_non_finite_loss_stops_before_the_update(tmp_path, monkeypatch):
    monkeypatch.setattr(arm, "reweight_rows", lambda adv, *a, **k: adv * math.nan)
    out = tmp_path / "run"
    message = one_line_error(progrpo.main, "--steps", 3, "--out", out, "--sample-every", 0)
    assert "step 1: loss nan, gradient norm nan; the update was not applied and no checkpoint was written" in message
    assert not list(out.glob("ckpt-*")) and metrics(out) == []


def test_a_checkpoint_never_holds_nan(tmp_path):
    model, _ = common.load_model("tiny", "cpu")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(math.nan)
    with pytest.raises(SystemExit, match="holds NaN or inf; not saved"):
        runs.save_checkpoint(tmp_path, 5, model, opt)
    assert list(tmp_path.iterdir()) == []


def test_json_output_has_no_nan_or_inf():
    text = cli.to_json({"a": [math.nan, 1.5, {"b": math.inf}], "c": (-math.inf, 2)})
    assert json.loads(text) == {"a": [None, 1.5, {"b": None}], "c": [None, 2]}


# ---------------------------------------------------------------- skipped steps still save


def test_a_run_whose_steps_are_all_skipped_still_saves(tmp_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text('{"question": "q", "answer": "\\\\frac{1}{0}"}\n{"question": "r", "answer": true}\n'
                    '{"question": "s", "answer": NaN}\n')
    out = tmp_path / "run"
    progrpo.main(["--data", str(data), "--steps", "2", "--out", str(out), "--max-new-tokens", "2"])
    assert runs.last_checkpoint(out).name == "ckpt-000002" and metrics(out) == []
    printed = capsys.readouterr().out  # said, not a silent exit 0 with an empty metrics.jsonl
    assert "step    2/2 | skipped: no prompt of the batch has a gradable gold answer" in printed
    assert "summary: no step was trained: every prompt drawn had a gold answer that cannot be graded" in printed
    progrpo.main(["--resume", str(out), "--steps", "3"])
    assert runs.last_checkpoint(out).name == "ckpt-000003"


# ---------------------------------------------------------------- a full disk


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    real, calls = torch.save, []
    monkeypatch.setattr(runs.torch, "save", lambda *a, **k: real(*a, **k) if calls.append(1) or len(calls) < 2
                        else enospc())  # step 1 saves, step 2 finds the disk full
    out = tmp_path / "run"
    message = one_line_error(progrpo.main, "--steps", 3, "--save-every", 1, "--out", out, "--sample-every", 0)
    assert ("step 2: cannot write the checkpoint ckpt-000002: No space left on device; the last checkpoint, "
            f"ckpt-000001, stands; free space, then --resume {out}") in message
    assert sorted(p.name for p in out.iterdir()) == [".lock", "ckpt-000001", "config.json", "metrics.jsonl"]


def test_full_disk_while_appending_metrics(tmp_path, monkeypatch):
    real = Path.open
    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: enospc() if mode == "a" and len(
        self.read_text().splitlines()) >= 3 else real(self, mode, *a, **k))  # steps 1-3 appended, then a full disk
    out = tmp_path / "run"
    message = one_line_error(progrpo.main, "--steps", 5, "--save-every", 2, "--out", out, "--sample-every", 0)
    assert (f"step 4: cannot append to {out / 'metrics.jsonl'}: No space left on device; the last checkpoint, "
            f"ckpt-000002, stands, so steps 3-4 are lost; free space, then --resume {out} redoes them") in message
    monkeypatch.setattr(Path, "open", real)
    gc.collect()  # the stopped run's frames (and its lock on the folder) end with its process; here, now
    progrpo.main(["--resume", str(out), "--sample-every", "0"])
    assert [m["step"] for m in metrics(out)] == [1, 2, 3, 4, 5]


def test_full_disk_in_eval_prints_the_results_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Path, "write_text", enospc)
    out = tmp_path / "e.json"
    message = one_line_error(ev.main, "--n", 2, "--limit", 2, "--out", out)
    assert f"cannot write {out}: No space left on device" in message
    assert "| Pass@1 |" in capsys.readouterr().out and list(tmp_path.iterdir()) == []  # no temp file left


# ---------------------------------------------------------------- signals, locks, torn lines


def test_double_ctrl_c_without_a_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    real = common.sample

    def interrupted_twice(*args, **kwargs):  # two Ctrl-C inside a step, before anything was saved
        for _ in range(2):
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(common, "sample", interrupted_twice)
    with pytest.raises(SystemExit) as e:
        progrpo.main(["--steps", "5", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert e.value.code == 130 and "quit without saving; no checkpoint was written" in out and "stands" not in out


def wait_for_steps(run: Path, n: int, proc):
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(metrics(run)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {n} steps in {run}: {proc.poll()}")


def test_live_run_is_locked_sigterm_saves_and_a_torn_line_is_dropped(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "progrpo.py", "--steps", "100000", "--save-every", "100000",
                             "--sample-every", "0", "--out", str(run)],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_steps(run, 2, proc)
        second = train("--resume", run, "--steps", 100000, check=False)  # a second live process: refused
        assert second.returncode != 0 and f"{run} is in use by another live progrpo.py process" in second.stderr
        assert "Traceback" not in second.stderr
        proc.send_signal(signal.SIGTERM)  # how SLURM and Kubernetes stop a job: like the first Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and "SIGTERM: finishing this step" in out, (out + err)[-2000:]
    done = int(runs.last_checkpoint(run).name.split("-")[1])
    assert done >= 2 and metrics(run)[-1]["step"] == done  # the step in flight was finished and saved

    with (run / "metrics.jsonl").open("a") as f:  # a kill or a full disk in the middle of an append
        f.write('{"step": %d, "reward": 0.' % (done + 1))
    p = train("--resume", run, "--steps", done + 1)
    assert "dropped a torn last line" in p.stdout
    assert [m["step"] for m in metrics(run)] == list(range(1, done + 2))


def test_runs_started_together_get_their_own_folders(tmp_path):
    procs = [subprocess.Popen([sys.executable, str(ROOT / "progrpo.py"), "--steps", "2", "--sample-every", "0"],
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all([m["step"] for m in metrics(r)] == [1, 2] for r in runs)


# ---------------------------------------------------------------- eval.py


def test_eval_checks_out_before_sampling(tmp_path):
    t0 = time.time()
    assert "is not an existing, writable folder" in one_line_error(ev.main, "--out", tmp_path / "no" / "e.json")
    assert f"--out {tmp_path} is a folder" in one_line_error(ev.main, "--out", tmp_path)
    assert "--n 0: must be an integer >= 1" in one_line_error(ev.main, "--n", 0)
    assert "--top-p 2.0: must be a number in (0, 1]" in one_line_error(ev.main, "--top-p", 2)
    assert "--k '1.5': expected comma-separated integers" in one_line_error(ev.main, "--k", 1.5, "--n", 2)
    for names in ["", ",", "demo,"]:  # no benchmark named: not the default, not a crash
        assert "unknown benchmark ''" in one_line_error(ev.main, "--benchmarks", names, "--data", tmp_path / "p.jsonl")
    assert time.time() - t0 < 5 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ['[1]', '{"benchmarks": []}', '{"benchmarks": {"demo": {"summary": {}}}}',
                                     '{"benchmarks": {"demo": {"ks": [1], "summary": {"pass@1": "x"}}}}',
                                     '{"benchmarks": {"demo": {"ks": [1], "summary": {"pass@1": 1, "length": "x"}}}}',
                                     '{"benchmarks": {"demo": {"ks": [1.5], "summary": {"pass@1.5": 0.5}}}}',
                                     '{"benchmarks": {}}', "[" * 100_000 + "]" * 100_000])
def test_compare_on_a_json_of_another_shape(content, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(content)
    assert f"--compare {path}: not a readable eval.py result" in one_line_error(ev.main, "--compare", path)


def test_compare_plot_into_a_missing_folder(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"benchmarks": {"demo": {"ks": [1], "summary": {"pass@1": 0.5}}}}')
    assert "--plot" in one_line_error(ev.main, "--compare", path, "--plot", tmp_path / "no" / "c.png")


@pytest.mark.parametrize("plot", ["c.txt", "c", "folder"])
def test_compare_plot_must_be_a_png_file_name(plot, tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"benchmarks": {"demo": {"ks": [1], "summary": {"pass@1": 0.5}}}}')
    (tmp_path / "folder").mkdir()
    message = one_line_error(ev.main, "--compare", path, "--plot", tmp_path / plot)
    assert f"--plot {tmp_path / plot}: give a file name ending in .png" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "r.json"]


def test_adapter_model_check_uses_resolved_names(tmp_path):
    run = tmp_path / "run"
    (run / "ckpt-000010").mkdir(parents=True)
    (run / "ckpt-000010" / "adapter_config.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"model": "Qwen/Qwen2.5-1.5B"}))
    assert ev.resolve_adapter(str(run), "Qwen2.5-1.5B") == str(run / "ckpt-000010")  # alias = hub id
    with pytest.raises(SystemExit, match="trained on --model Qwen/Qwen2.5-1.5B, not tiny"):
        ev.resolve_adapter(str(run / "ckpt-000010"), "tiny")  # a ckpt-* folder is checked too
    (run / "config.json").write_text(json.dumps({"model": str(tmp_path) + "/"}))
    assert ev.resolve_adapter(str(run), str(tmp_path)) == str(run / "ckpt-000010")  # a trailing / does not matter
    (run / "config.json").write_text("{")
    with pytest.raises(SystemExit, match="not a readable run config"):
        ev.resolve_adapter(str(run), "tiny")
