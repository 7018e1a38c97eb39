"""One forward per on-policy step: progrpo.py's update (confidences and pi_old from the training forward,
groups with no signal skipped) gives the loss and gradients of the two-pass path it replaced (a no-grad
old-policy pass over prompt + completion, then the training forward over every row), here written out
as the reference. The rollout is canned, so that which groups are all-wrong is chosen, not sampled."""
import json

import pytest
import torch

import arm
import common
import progrpo
import tasks
from progrpo import aggregate, policy_loss

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")  # in-process runs of progrpo.main (conftest)
P, G = 4, 4


def canned(tok, prompts, all_wrong):
    """A Rollout for the demo prompts ("sum S"): group 0 all wrong (or mixed), group 1 all correct,
    groups 2 and 3 mixed. Completions are "a b" + EOS, or "a" + EOS (shorter: padding in the batch)."""
    texts = []
    for p, prompt in enumerate(prompts):
        s = int(prompt.split()[-1])
        right, wrong = f"{s // 2} {s - s // 2}", f"{s % 9 + 1} 9"  # wrong: the digits add up to more than 9
        pattern = {0: "wwww" if all_wrong else "wrww", 1: "rrrr", 2: "rwrw", 3: "wwwr"}[p]
        texts += [right if c == "r" else (wrong if g % 2 else wrong.split()[0]) for g, c in enumerate(pattern)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in texts]
    T = max(map(len, ids))
    completion = torch.tensor([x + [tok.pad_token_id] * (T - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in ids])
    L = enc.input_ids.shape[1]
    seqs = torch.cat([enc.input_ids.repeat_interleave(G, 0), completion], 1)
    attn = torch.cat([enc.attention_mask.repeat_interleave(G, 0), mask], 1)
    return common.Rollout(seqs, attn, mask, L, texts)


CLIP = torch.nn.utils.clip_grad_norm_  # the real one: the test below records gradients through a wrapper


def two_pass_reference(ro, R, mb, loss_agg, alpha=1.0, beta=0.0, updates=1, low_frac=0.2, temperature=1.0):
    """The step as it was: a no-grad pass for pi_old, c(q), c(o|q) (and the reference pass when beta > 0);
    then forward + backward of every row, per update, with progrpo.py's clipping and AdamW (the demo's lr).
    Returns the last update's loss and every update's gradients."""
    torch.manual_seed(0)  # progrpo.main seeds before loading: the same LoRA initialisation
    model, _ = common.load_model("tiny", "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    L, N = ro.prompt_len, len(ro.texts)
    old_all, _ = common.token_logprobs_batched(model, ro.seqs, ro.attn, 0, mb, temperature)
    ref = None
    if beta:
        with model.disable_adapter():
            ref = common.token_logprobs_batched(model, ro.seqs, ro.attn, L - 1, mb, temperature)[0]
    old, mask = old_all[:, L - 1:], ro.mask.float()
    prompt_mask = ro.attn[:, 1:L] * ro.attn[:, :L - 1]
    c_q = arm.prompt_confidence(old_all[::G, :L - 1], prompt_mask[::G])
    c_o = arm.answer_confidence(old, mask, low_frac)
    adv = arm.reweight(arm.group_advantages(R), R > 0.5, c_o, c_q, alpha).reshape(N)
    grads = []
    for _ in range(updates):
        opt.zero_grad(set_to_none=True)
        loss, n_tokens = 0.0, mask.sum()
        for i in range(0, N, mb):
            s = slice(i, i + mb)
            logp, _ = common.token_logprobs(model, ro.seqs[s], ro.attn[s], L - 1, temperature)
            loss_tok = policy_loss(logp, old[s], adv[s], 0.2, 0.28, ref[s] if ref is not None else None, beta)[0]
            part = aggregate(loss_tok, mask[s], loss_agg, n_tokens, N)
            part.backward()
            loss += part.item()
        grads.append([p.grad.clone() for p in params])
        CLIP(params, 1.0)
        opt.step()
    return loss, grads


def run_main(tmp_path, monkeypatch, all_wrong, *flags):
    """progrpo.main for one step on the canned rollout; returns (metrics, rollout, R, gradients per update)."""
    seen = {"grads": []}

    def fake_sample(model, tok, prompts, n, *args, **kwargs):
        seen["ro"], seen["prompts"] = canned(tok, prompts, all_wrong), prompts
        return seen["ro"]

    def grads_then_clip(params, max_norm):
        params = list(params)
        seen["grads"].append([p.grad.clone() for p in params if p.requires_grad])
        return CLIP(params, max_norm)

    monkeypatch.setattr(common, "sample", fake_sample)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", grads_then_clip)
    progrpo.main([str(a) for a in ("--steps", 1, "--prompts-per-step", P, "--group-size", G, "--sample-every", 0,
                                   "--out", tmp_path / "run", *flags)])
    m = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    targets = [prompt.split()[-1] for prompt in seen["prompts"] for _ in range(G)]
    R = torch.tensor([r for r, _ in tasks.demo_task().grade(seen["ro"].texts, targets)]).view(P, G)
    return m, seen["ro"], R, seen["grads"]


def assert_same(got, ref):
    assert len(got) == len(ref) > 0
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean"])
@pytest.mark.parametrize("all_wrong", [True, False])
@pytest.mark.parametrize("mb", [3, 16])  # 3: groups split across micro-batches
def test_one_forward_equals_two_passes(tmp_path, monkeypatch, loss_agg, all_wrong, mb):
    m, ro, R, grads = run_main(tmp_path, monkeypatch, all_wrong, "--micro-batch", mb, "--loss-agg", loss_agg)
    assert (m["all_wrong"], m["all_correct"]) == ((0.25, 0.25) if all_wrong else (0.0, 0.25))
    loss, ref = two_pass_reference(ro, R, mb, loss_agg)
    assert m["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-7)
    assert_same(grads[0], ref[0])
    assert max(g.abs().max().item() for g in ref[0]) > 1e-3  # not equal by being zero
    _, without_arm = two_pass_reference(ro, R, mb, loss_agg, alpha=0.0)  # and the shift shows in the gradient
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(without_arm[0], ref[0]))


@pytest.mark.parametrize("beta, updates, temperature", [(0.1, 1, 1.0), (0.0, 2, 1.0), (0.1, 2, 1.0), (0.0, 1, 0.7)])
def test_kl_later_updates_and_temperature_equal_two_passes(tmp_path, monkeypatch, beta, updates, temperature):
    """--beta > 0 forwards every row (all-wrong ones too, for the KL); later updates reuse the first
    update's log-probs as pi_old, where the two-pass path kept its no-grad pass's; the confidences, like
    pi_old, are at the sampling temperature (the reference computes them at --temperature)."""
    m, ro, R, grads = run_main(tmp_path, monkeypatch, True, "--micro-batch", 3, "--beta", beta,
                               "--updates-per-batch", updates, "--temperature", temperature)
    loss, ref = two_pass_reference(ro, R, 3, "token-mean", beta=beta, updates=updates, temperature=temperature)
    assert m["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-7)
    assert len(grads) == len(ref) == updates
    for got, want in zip(grads, ref):
        assert_same(got, want)
