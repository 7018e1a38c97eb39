"""The fast rollout path samples from the same policy as the plain peft model, and cutting
padding columns changes no log-prob."""
import pytest
import torch

import common
import tasks

PROMPTS = [f"sum {s}" for s in tasks.DEMO_TARGETS]


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    model, tok = common.load_model("tiny", "cpu")
    for name, p in model.named_parameters():  # a LoRA update that changes the outputs (B starts at 0)
        if "lora_B" in name:
            p.data.normal_(0, 0.3)
    return model, tok


def test_greedy_tokens_identical_through_fast_and_plain_path(policy):
    model, tok = policy
    gen = common.generation_copy(model)
    assert gen.lm_head.weight.data_ptr() == gen.model.embed_tokens.weight.data_ptr()  # still tied: one copy
    plain = common.sample(model, tok, PROMPTS, 2, 8, temperature=0)
    fast = common.sample(gen, tok, PROMPTS, 2, 8, temperature=0, static_cache=True)
    assert fast.texts == plain.texts
    # and the copy follows the policy after an update
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.mul_(-1.5)
    stale = common.sample(gen, tok, PROMPTS, 2, 8, temperature=0).texts
    common.sync_generation_copy(model, gen)
    assert common.sample(gen, tok, PROMPTS, 2, 8, temperature=0).texts == \
        common.sample(model, tok, PROMPTS, 2, 8, temperature=0).texts != stale


def test_padding_columns_cost_nothing_and_change_nothing(policy):
    model, tok = policy
    ro = common.sample(model, tok, PROMPTS, 2, 6, temperature=1.0)
    L, pad = ro.prompt_len, 5  # the same rollout with extra all-padding columns on both sides
    seqs = torch.nn.functional.pad(ro.seqs, (pad, pad), value=tok.pad_token_id)
    attn = torch.nn.functional.pad(ro.attn, (pad, pad))
    with torch.no_grad():
        lp, ent = common.token_logprobs(model, ro.seqs, ro.attn, 0)
        lp2, ent2 = common.token_logprobs(model, seqs, attn, 0)
        comp, _ = common.token_logprobs(model, seqs, attn, L + pad - 1)
    assert lp2.shape == (len(PROMPTS) * 2, seqs.shape[1] - 1)
    assert torch.allclose(lp2[:, pad:pad + lp.shape[1]], lp, atol=1e-6)
    assert torch.allclose(ent2[:, pad:pad + lp.shape[1]], ent, atol=1e-6)
    assert torch.equal(lp2[:, :pad], torch.zeros(len(lp), pad))  # cut-off columns come back as 0
    assert torch.allclose(comp[:, :ro.mask.shape[1]], lp[:, L - 1:], atol=1e-6)


def test_nf4_base_fast_path_and_lora_gradients_after_generate(tmp_path):
    """A 4-bit NF4 base (bitsandbytes runs on CPU too): the dequantised generation copy samples the
    same greedy tokens, and LoRA still gets gradients after generate() (on AVX512-BF16 CPUs the
    first inference forward would otherwise repack the 4-bit weights into a path without them)."""
    base, tok = common.tiny_model()
    base.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok = common.load_model(str(tmp_path), "cpu", load_in_4bit=True)
    assert type(model.get_base_model().model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear4bit"
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.3)
    gen = common.generation_copy(model)
    assert gen.lm_head.weight.data_ptr() == gen.model.embed_tokens.weight.data_ptr()  # still tied: one copy
    plain = common.sample(model, tok, PROMPTS, 2, 8, temperature=0)
    assert common.sample(gen, tok, PROMPTS, 2, 8, temperature=0, static_cache=True).texts == plain.texts
    model.train()
    logp, _ = common.token_logprobs(model, plain.seqs, plain.attn, plain.prompt_len - 1)
    logp.sum().backward()
    grads = [p.grad for name, p in model.named_parameters() if "lora_A" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_gradient_checkpointing_gives_the_same_gradients_on_cpu():
    """The trainer turns it on only on CUDA (on CPU it only costs time), but the path itself runs here."""
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, tok = common.load_model("tiny", "cpu", gradient_checkpointing=checkpointing)
        model.train()
        for name, p in model.named_parameters():  # B = 0 would give A no gradient
            if "lora_B" in name:
                p.data.normal_(0, 0.3)
        ro = common.sample(model, tok, PROMPTS, 1, 4, temperature=0)  # one row per prompt: no shared prompt pass
        logp, _ = common.token_logprobs(model, ro.seqs, ro.attn, ro.prompt_len - 1)
        (logp * ro.mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all(g.abs().sum() > 0 for g in grads[0].values())
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_a_groups_shared_prompt_pass_gives_the_same_logprobs_and_gradients(monkeypatch):
    """common.decode runs a group's prompt once and repeats its KV cache for the group's rows; against one
    forward over every whole row: the same log-probs, entropies, prompt log-probs and LoRA gradients."""
    torch.manual_seed(0)
    model, tok = common.load_model("tiny", "cpu")
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.3)
    ro = common.sample(model, tok, ["sum 3", "sum 12 3", "sum"], 4, 3)  # prompts of 2, 3, 1 tokens: left padding
    first = torch.arange(len(ro.seqs)) % 4 == 0
    full = lambda base, seqs, attn, pos, prompt: base.model(input_ids=seqs, attention_mask=attn, position_ids=pos,
                                                            use_cache=False).last_hidden_state
    made = []  # the shared path builds a KV cache: check that it ran
    monkeypatch.setattr(common, "DynamicCache", lambda *a, cls=common.DynamicCache, **k: made.append(1) or cls(*a, **k))
    out = []
    for decode in (common.decode, full):
        monkeypatch.setattr(common, "decode", decode)
        model.zero_grad()
        logp, ent, logp_q = common.token_logprobs(model, ro.seqs, ro.attn, ro.prompt_len - 1, 0.7, first)
        (logp * ro.mask).sum().backward()
        out.append([logp.detach(), ent, logp_q, *(p.grad.clone() for p in model.parameters() if p.requires_grad)])
    assert made and all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(*out))
    assert (out[0][0] * ro.mask).abs().sum() > 0 and out[0][2].abs().sum() > 0
