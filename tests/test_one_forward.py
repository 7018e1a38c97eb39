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


def two_pass_reference(ro, R, mb, loss_agg, alpha=1.0, low_frac=0.2):
    """The step as it was: a no-grad pass for pi_old, c(q), c(o|q); then forward + backward of every row."""
    torch.manual_seed(0)  # progrpo.main seeds before loading: the same LoRA initialisation
    model, _ = common.load_model("tiny", "cpu")
    L, N = ro.prompt_len, len(ro.texts)
    old_all, _ = common.token_logprobs_batched(model, ro.seqs, ro.attn, 0, mb)
    old, mask = old_all[:, L - 1:], ro.mask.float()
    prompt_mask = ro.attn[:, 1:L] * ro.attn[:, :L - 1]
    c_q = arm.prompt_confidence(old_all[::G, :L - 1], prompt_mask[::G])
    c_o = arm.answer_confidence(old, mask, low_frac)
    adv = arm.reweight(arm.group_advantages(R), R > 0.5, c_o, c_q, alpha).reshape(N)
    loss, n_tokens = 0.0, mask.sum()
    for i in range(0, N, mb):
        s = slice(i, i + mb)
        logp, _ = common.token_logprobs(model, ro.seqs[s], ro.attn[s], L - 1)
        part = aggregate(policy_loss(logp, old[s], adv[s], 0.2, 0.28)[0], mask[s], loss_agg, n_tokens, N)
        part.backward()
        loss += part.item()
    return loss, [p.grad for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean"])
@pytest.mark.parametrize("all_wrong", [True, False])
@pytest.mark.parametrize("mb", [3, 16])  # 3: groups split across micro-batches
def test_one_forward_equals_two_passes(tmp_path, monkeypatch, loss_agg, all_wrong, mb):
    seen = {}

    def fake_sample(model, tok, prompts, n, *args, **kwargs):
        seen["ro"], seen["prompts"] = canned(tok, prompts, all_wrong), prompts
        return seen["ro"]

    clip = torch.nn.utils.clip_grad_norm_

    def grads_then_clip(params, max_norm):
        params = list(params)
        seen["grads"] = [p.grad.clone() for p in params if p.requires_grad]
        return clip(params, max_norm)

    monkeypatch.setattr(common, "sample", fake_sample)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", grads_then_clip)
    progrpo.main([str(a) for a in ("--steps", 1, "--prompts-per-step", P, "--group-size", G, "--micro-batch", mb,
                                   "--loss-agg", loss_agg, "--sample-every", 0, "--out", tmp_path / "run")])
    m = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    ro = seen["ro"]
    targets = [prompt.split()[-1] for prompt in seen["prompts"] for _ in range(G)]
    R = torch.tensor([r for r, _ in tasks.demo_task().grade(ro.texts, targets)]).view(P, G)
    assert (m["all_wrong"], m["all_correct"]) == ((0.25, 0.25) if all_wrong else (0.0, 0.25))
    loss, grads = two_pass_reference(ro, R, mb, loss_agg)
    assert m["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-7)
    assert len(grads) == len(seen["grads"]) > 0
    for ref, got in zip(grads, seen["grads"]):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-7)
    assert max(g.abs().max().item() for g in grads) > 1e-3  # not equal by being zero
    _, without_arm = two_pass_reference(ro, R, mb, loss_agg, alpha=0.0)  # and the shift shows in the gradient
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(without_arm, grads))
