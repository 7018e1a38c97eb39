"""One consumer GPU (issue 20), checked on CPU: --dtype (fp16 where a card has no bf16, with fp32 LoRA and a
loss scale), and an out-of-memory error in a step that says what to lower and loses nothing (injected).
The memory estimate itself: tests/test_memory.py. On a GPU: tests/test_gpu.py."""
import gc
import json
import sys
from pathlib import Path

import pytest
import torch

import common
import progrpo
import runs

sys.path.insert(0, str(Path(__file__).parent))
from test_reliability import one_line_error  # noqa: E402
from test_train import metrics  # noqa: E402

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")  # in-process runs of progrpo.main (conftest)
QUIET = ["--sample-every", "0"]


def test_auto_dtype_is_fp16_on_a_card_without_bf16(monkeypatch):
    for native, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n)
        assert common.resolve_dtype("auto", "cuda") == expected
    assert common.resolve_dtype("auto", "cpu") == "fp32"
    assert [common.resolve_dtype(d, "cuda") for d in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_a_16_bit_base_keeps_fp32_lora_and_trains(dtype, tmp_path):
    """The base and the generation copy in 16 bits, LoRA (what the optimizer holds) in fp32; a demo run in
    that dtype learns, records its dtype, and in fp16 logs its loss scale."""
    model, _ = common.load_model("tiny", "cpu", dtype=dtype)
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {common.DTYPES[dtype]}
    assert next(common.generation_copy(model).parameters()).dtype == common.DTYPES[dtype]
    out = tmp_path / "run"
    progrpo.main(["--steps", "40", "--dtype", dtype, "--out", str(out), *QUIET])
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype
    rows = metrics(out)
    assert rows[-1]["accuracy"] > rows[0]["accuracy"] and all(r["loss"] == r["loss"] for r in rows)
    assert {r["loss_scale"] for r in rows} == ({1.0} if dtype == "bf16" else {2.0**10})  # no overflow here


@pytest.mark.parametrize("load_in_4bit", [False, True], ids=["dense", "nf4"])
def test_the_generation_copy_shares_what_lora_does_not_change(load_in_4bit, tmp_path):
    """Embeddings, norms and biases are the base's own tensors (no second copy); every LoRA-wrapped linear
    weight is the copy's own, and greedy tokens equal the peft model's (after a LoRA update too)."""
    model, tok = common.tiny_model()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok = common.load_model(str(tmp_path), "cpu", load_in_4bit=load_in_4bit)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    gen, base = common.generation_copy(model), model.get_base_model()
    shared = {n for n, p in gen.named_parameters()
              if any(p is q for q in base.parameters())}
    assert shared == {n for n, _ in gen.named_parameters() if "proj.weight" not in n}
    assert any("embed_tokens" in n for n in shared) and any("norm" in n for n in shared)
    prompts = [common.format_prompt(tok, q) for q in ("1 2 3", "4 5")]
    greedy = lambda m: common.sample(m, tok, prompts, 1, 4, temperature=0).seqs
    assert torch.equal(greedy(gen), greedy(model))


def test_fp16_overflow_skips_the_update_and_lowers_the_scale(tmp_path):
    """A loss scale so large that the scaled gradient overflows: the scaler skips the optimizer step (the
    weights stay as they were) and halves the scale; no error, as with an fp32 NaN."""
    import arm
    model, tok = common.load_model("tiny", "cpu", dtype="fp16")
    args = progrpo.Args(group_size=4, max_new_tokens=2, micro_batch=0, dtype="fp16")
    prompts = [common.format_prompt(tok, "1 2 3")] * 2
    ro = common.sample(model, tok, prompts, 4, 2)
    R = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    u = progrpo.update(model, opt, tok, ro, prompts, ["1 2 3"] * 2, arm.group_advantages(R), R > 0.5, args, 1,
                       tmp_path, scaler)
    assert u["grad_norm"] != u["grad_norm"] or u["grad_norm"] == float("inf")  # nan or inf: overflowed
    assert u["loss_scale"] == 2.0**59
    assert all(torch.equal(a, p) for a, p in zip(before, (p for p in model.parameters() if p.requires_grad)))


def test_fp16_loss_scale_is_checkpointed_and_resumed(tmp_path):
    out = tmp_path / "run"
    progrpo.main(["--steps", "2", "--dtype", "fp16", "--out", str(out), *QUIET])
    state = torch.load(runs.last_checkpoint(out) / "state.pt", weights_only=False)
    assert state["scaler"]["scale"] == 2.0**10
    progrpo.main(["--resume", str(out), "--steps", "3"])
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]


def out_of_memory_at(monkeypatch, module, name, call):
    """Make module.name raise torch.OutOfMemoryError on its `call`-th call (1-based), as CUDA would."""
    real, calls = getattr(module, name), []

    def fake(*a, **k):
        calls.append(1)
        if len(calls) == call:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(module, name, fake)


@pytest.mark.parametrize("phase, target, call, flag", [
    ("sampling", "sample", 3, "--no-fast-generation"),
    ("update", "token_logprobs", 3, "--micro-batch 32"),  # demo: micro-batch 0, all 64 rows in one forward
])
def test_out_of_memory_in_a_step_is_one_line_and_resume_goes_on(phase, target, call, flag, tmp_path,
                                                                 monkeypatch):
    """Step 3 runs out of memory: one line naming the phase and the flag to lower; steps 1-2 are saved
    (checkpoint and metrics) and --resume with that flag, which --resume accepts, finishes the run."""
    out = tmp_path / "run"
    out_of_memory_at(monkeypatch, common, target, call)
    message = one_line_error(progrpo.main, "--steps", 4, "--save-every", 10, "--out", out, *QUIET)
    assert message.startswith(f"error: out of GPU memory in {phase} at step 3 (peak unknown (no CUDA)): "
                              f"lower it with {flag}, or in a new run ") and message.endswith(
                              f"; step 2 is saved: --resume {out} {flag}")
    assert runs.last_checkpoint(out).name == "ckpt-000002" and [m["step"] for m in metrics(out)] == [1, 2]
    monkeypatch.undo()
    gc.collect()  # the failed run's frames (and its folder lock) are held by the caught exception's traceback
    progrpo.main(["--resume", str(out), *flag.split(), "--steps", "4"])
    assert [m["step"] for m in metrics(out)] == [1, 2, 3, 4]
    config = json.loads((out / "config.json").read_text())
    assert (config["micro_batch"], config["fast_generation"]) == ((32, True) if phase == "update" else (0, False))


def test_out_of_memory_in_the_first_step_saves_nothing_and_says_so(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out_of_memory_at(monkeypatch, common, "sample", 1)
    message = one_line_error(progrpo.main, "--steps", 2, "--no-fast-generation", "--out", out, *QUIET)
    assert message == ("error: out of GPU memory in sampling at step 1 (peak unknown (no CUDA)): start a new run "
                       "with lower --prompts-per-step or --max-new-tokens; nothing was saved (no step had finished)")
    assert not list(out.glob("ckpt-*"))


def test_out_of_memory_in_the_evaluation_skips_it(tmp_path, monkeypatch, capsys):
    """Held-out numbers are extra: an out-of-memory there is a warning and the run goes on."""
    out = tmp_path / "run"
    out_of_memory_at(monkeypatch, progrpo.evaluation, "evaluate", 1)
    progrpo.main(["--steps", "2", "--eval-every", "1", "--eval-n", "2", "--eval-limit", "2", "--out", str(out),
                  *QUIET])
    assert "warning: out of GPU memory in the evaluation: skipped" in capsys.readouterr().out
    rows = metrics(out)
    assert [m["step"] for m in rows] == [1, 2] and "eval/demo/pass@1" not in rows[0] and "eval/demo/pass@1" in rows[1]
