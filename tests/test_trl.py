"""ProGRPO inside TRL (progrpo_trl.py) against TRL's own path and against arm.py, on CPU: a tiny Qwen2 and
its tokenizer built in code (common.tiny_model), LoRA through TRL's peft_config, sampling temperature 0.7 so
that a missing temperature would show. Skipped when the optional extra `trl` is not installed.

The reward makes every kind of group: "sum 2" is always correct, "3" never, and "sum 5 4" is correct when
the completion starts with an even digit. The prompts are 2, 3 and 1 tokens long, so two are left-padded.
Run as a script (`accelerate launch ... tests/test_trl.py OUT`), this file is the worker of
test_two_processes_equal_one.
"""
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="optional extra: pip install 'trl==1.16.*'")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

import arm  # noqa: E402
import common  # noqa: E402
import progrpo_trl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
G, TEMPERATURE, ALPHA, RHO = 4, 0.7, 1.0, 0.5  # rho 0.5: |T_low| is 1 or 2 of 1-3 tokens
PROMPTS = ["sum 2", "sum 5 4", "3"]  # all correct, mixed, all wrong (rows 4-7, the mixed group, span 2 processes)
INPUTS = [{"prompt": p} for p in PROMPTS for _ in range(G)]  # one generation batch: P x G = 12 rows, by group
# Fixed completions for the replay runs, one per row; rows 3, 9 and 11 have no EOS: truncated, for TRL.
# The mixed group's one correct completion (row 4) is on process 0: process 1 holds only wrong ones of that group.
# Process 0's rows are up to 3 tokens long, process 1's up to 2: each process pads its completions differently.
REPLAY = ["1 1 <eos>", "2 0 <eos>", "1 <eos>", "9 9 9",
          "2 2 <eos>", "3 1 <eos>", "7 <eos>", "5 <eos>",
          "1 <eos>", "0 3", "5 <eos>", "3 3"]


def reward(prompts, completions, **_):
    return [1.0 if p == "sum 2" else 0.0 if p == "3" else float(c[:1] in "02468")
            for p, c in zip(prompts, completions)]


def replay(prompts, trainer):
    """TRL's rollout_func: the fixed completions of REPLAY for this process's rows (rank-major, as TRL's
    sampler deals a generation batch), so that runs with different process counts see the same batch."""
    tok, start = trainer.processing_class, trainer.accelerator.process_index * len(prompts)
    return dict(prompt_ids=[tok(p).input_ids for p in prompts], logprobs=None,
                completion_ids=[tok.convert_tokens_to_ids(REPLAY[start + i].split()) for i in range(len(prompts))])


def make_trainer(cls, out, rows=len(INPUTS), rollout_func=None, **config):
    """A trainer on a fresh tiny model; rows: completions per process and generation batch; config: overrides."""
    model, tok = common.tiny_model()
    config = progrpo_trl.ProGRPOConfig(**{**dict(
        output_dir=str(out), use_cpu=True, bf16=False, report_to="none", save_strategy="no", seed=0, alpha=ALPHA,
        arm_low_frac=RHO, num_generations=G, per_device_train_batch_size=rows, max_completion_length=3,
        temperature=TEMPERATURE, learning_rate=0.05, max_steps=2, logging_steps=1, disable_tqdm=True), **config})
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = cls(model, reward, args=config, train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]),
                  processing_class=tok, peft_config=lora, rollout_func=rollout_func)
    trainer.model.train()  # _generate_and_score_completions reads the mode: train, as inside trainer.train()
    return trainer


def score(trainer, inputs, seed=5):  # seed 5 samples completions of 2 and 3 tokens, and a mixed group
    torch.manual_seed(seed)  # the same samples for every trainer on the same model
    return trainer._generate_and_score_completions(inputs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One generation batch, sampled with the same seed by TRL's GRPOTrainer and by ProGRPOTrainer at alpha
    0 and ALPHA."""
    common.pick_device()  # one torch thread on CPU, as every CPU run here (docs/performance.md: CPU threads)
    out = tmp_path_factory.mktemp("trl")
    pro = make_trainer(progrpo_trl.ProGRPOTrainer, out)
    return dict(grpo=score(make_trainer(GRPOTrainer, out), INPUTS),
                pro0=score(make_trainer(progrpo_trl.ProGRPOTrainer, out, alpha=0.0), INPUTS),
                pro=score(pro, INPUTS), trainer=pro)


def test_alpha_zero_is_trl_grpo(runs):
    grpo, pro0 = runs["grpo"], runs["pro0"]
    assert torch.equal(grpo["completion_ids"], pro0["completion_ids"])  # the same samples
    assert torch.equal(grpo["advantages"], pro0["advantages"])  # bit for bit


def test_arm_equals_arm_py_on_an_independent_forward(runs):
    """Advantages = arm.reweight(TRL's advantages, ...) with the confidences from common.token_logprobs
    (progrpo.py's forward: its own position ids, logprob_kernel's head) and the rewards re-graded."""
    trainer, out, A = runs["trainer"], runs["pro"], runs["grpo"]["advantages"].view(-1, G)
    assert torch.equal(runs["grpo"]["completion_ids"], out["completion_ids"])
    seqs = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    L, mask = out["prompt_ids"].shape[1], out["completion_mask"]
    assert mask.sum(1).unique().numel() > 1 and out["prompt_mask"].sum(1).unique().numel() == 3  # padding matters
    with torch.no_grad():
        logp, _ = common.token_logprobs(trainer.model, seqs, attn, 0, TEMPERATURE)  # (N, L + T - 1)
    c_q = arm.prompt_confidence(logp[::G, :L - 1], (attn[:, 1:L] * attn[:, :L - 1])[::G])
    c_o = arm.answer_confidence(logp[:, L - 1:], mask, RHO)
    texts = trainer.processing_class.batch_decode([c[m.bool()] for c, m in zip(out["completion_ids"], mask)],
                                                  skip_special_tokens=True)
    correct = (torch.tensor(reward([x["prompt"] for x in INPUTS], texts)) > 0.5).view(-1, G)
    assert correct.sum(1).tolist()[0] == G and 0 < correct.sum(1).tolist()[1] < G and not correct[2].any()
    expected = arm.reweight(A, correct, c_o, c_q, ALPHA)
    got = out["advantages"].view(-1, G)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # measured: 6e-8
    assert torch.equal(got[2], A[2])  # all wrong: untouched
    assert (got[:2] - A[:2]).abs().min() > 0  # every other completion moved
    metrics = trainer._metrics["train"]  # progrpo.py's names and definitions
    stats = {k: v for k, v in arm.shift_stats(A, expected).items() if math.isfinite(v)}  # NaN: not logged
    assert {"shift", "rel_shift", "rel_spread", "sign_flips", "swaps", "tie_gap"} <= stats.keys()
    assert {k: metrics[f"arm_{k}"][-1] for k in stats} == pytest.approx(stats, abs=1e-5)
    assert metrics["all_correct"][-1] == pytest.approx(1 / 3)
    assert list(trainer._logs["advantages"]) == pytest.approx(got.view(-1).tolist())  # the completions table


def test_truncated_rows_out_of_the_loss_keep_trl_advantage(tmp_path):
    """mask_truncated_completions: TRL takes a truncated completion out of the loss (mask 0); ARM then has no
    token for c(o|q) and leaves TRL's advantage (row 3 of the all-correct group: 0, not -inf)."""
    runs = [score(make_trainer(cls, tmp_path, rollout_func=replay, mask_truncated_completions=True), INPUTS)
            for cls in (GRPOTrainer, progrpo_trl.ProGRPOTrainer)]
    out_of_loss = runs[1]["completion_mask"].sum(dim=1) == 0
    assert out_of_loss.tolist() == [i in (3, 9, 11) for i in range(len(INPUTS))]
    assert torch.equal(runs[1]["advantages"][out_of_loss], runs[0]["advantages"][out_of_loss])
    assert runs[1]["advantages"].isfinite().all() and runs[1]["advantages"][:3].abs().min() > 0


def test_missing_trl_method_is_one_line(monkeypatch):
    monkeypatch.delattr(GRPOTrainer, "_calculate_rewards")
    spec = importlib.util.spec_from_file_location("progrpo_trl_copy", ROOT / "progrpo_trl.py")
    with pytest.raises(ImportError, match=r"^progrpo_trl.py needs TRL's GRPOTrainer as in trl==1.16.\* \(GRPOTrainer "
                                          r"has no _calculate_rewards\): pip install 'trl==1.16.\*'$"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_train_two_steps(runs):
    trainer = runs["trainer"]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "arm_shift" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if p.requires_grad)


def test_cli_demo_two_steps(tmp_path):
    """progrpo_trl.main on progrpo.py's demo task and preset (8 prompts x 8, 2 new tokens), 2 steps."""
    trainer = progrpo_trl.main(["--max_steps", "2", "--output_dir", str(tmp_path), "--save_strategy", "no",
                                "--disable_tqdm", "true", "--report_to", "none", "--alpha", "1"])
    assert trainer.state.global_step == 2 and trainer.args.generation_batch_size == 64
    assert trainer.args.max_completion_length == 2 and trainer.args.epsilon_high == 0.28
    logs = [h for h in trainer.state.log_history if "arm_shift" in h]
    assert len(logs) == 2 and all(0 <= h["all_correct"] <= 1 and h["distinct_correct"] >= 0 for h in logs)


def test_cli_bad_flag_is_one_line():
    with pytest.raises(SystemExit, match=r"^error: --alpha -1.0: must be a number >= 0$"):
        progrpo_trl.main(["--alpha", "-1"])


def test_two_processes_equal_one(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` with the trainer's use_cpu: two CPU processes over
    gloo (accelerate's MULTI_CPU; `--cpu` would start only one). Each process scores its half of one
    generation batch whose mixed group spans both; the completions are replayed from REPLAY through TRL's
    rollout_func, since the two layouts would not sample the same tokens. Their advantages, concatenated
    in rank order, must equal one process's on the whole batch. Each worker then trains 2 real steps
    (TRL's sampler, generation, DDP)."""
    with socket.socket() as s:  # a free port: other test runs may use torchrun's default one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRL_EXPERIMENTAL_SILENCE="1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(port), __file__, str(tmp_path)]
    done = subprocess.run(launch, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["processes"] for r in ranks] == [2, 2] and all(r["steps"] == 2 for r in ranks)
    one = score(make_trainer(progrpo_trl.ProGRPOTrainer, tmp_path, rollout_func=replay), INPUTS)
    two = torch.cat([r["advantages"] for r in ranks])
    torch.testing.assert_close(two, one["advantages"], rtol=0, atol=1e-6)  # measured: 0, bit for bit
    A = one["advantages"].view(-1, G)
    assert A[0].abs().min() > 0 and torch.equal(A[2], torch.zeros(G))  # ARM moved all-correct; all-wrong is 0
    assert json.loads(ranks[0]["metrics"]) == json.loads(ranks[1]["metrics"])  # every process logs the same


def worker(out: Path):
    """One process of test_two_processes_equal_one: its half of the replayed batch, then 2 training steps."""
    trainer = make_trainer(progrpo_trl.ProGRPOTrainer, out, rows=len(INPUTS) // 2, rollout_func=replay)
    rank, n = trainer.accelerator.process_index, len(INPUTS) // trainer.accelerator.num_processes
    result = score(trainer, INPUTS[rank * n:(rank + 1) * n])
    metrics = json.dumps({k: v for k, v in trainer._metrics["train"].items() if k in ("arm_shift", "all_correct")})
    live = make_trainer(progrpo_trl.ProGRPOTrainer, out, rows=len(INPUTS) // 2)  # real sampling and updates
    live.train()
    torch.save(dict(advantages=result["advantages"], processes=trainer.accelerator.num_processes,
                    steps=live.state.global_step, metrics=metrics), out / f"rank{rank}.pt")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
