"""The clipped surrogate and its normalisation, on hand-made ratios."""
import math

import torch

from progrpo import aggregate, policy_loss

RATIOS = torch.tensor([[0.5, 1.0, 1.5]])


def _loss(adv, ratios=RATIOS, **kw):
    old = torch.zeros_like(ratios)
    logp = ratios.log().requires_grad_(True)
    loss, clipped = policy_loss(logp, old, torch.tensor([adv]), 0.2, 0.28, **kw)
    loss.sum().backward()
    return loss.detach(), clipped, logp.grad


def test_positive_advantage_clips_above_only():
    loss, clipped, grad = _loss(1.0)
    assert torch.allclose(loss, -torch.tensor([[0.5, 1.0, 1.28]]))  # min(r A, clip(r) A)
    assert clipped.tolist() == [[False, False, True]]
    assert grad[0, 2] == 0 and grad[0, 0] != 0  # a clipped token gets no gradient; a low ratio still does


def test_negative_advantage_clips_below_only():
    loss, clipped, grad = _loss(-1.0)
    assert torch.allclose(loss, torch.tensor([[0.8, 1.0, 1.5]]))
    assert clipped.tolist() == [[True, False, False]]
    assert grad[0, 0] == 0 and grad[0, 2] != 0


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    ones = torch.ones(1, 3)
    loss0, _, _ = _loss(0.0, ratios=ones, ref_logp=torch.zeros(1, 3), beta=0.1)
    assert torch.equal(loss0, torch.zeros(1, 3))
    loss, _, _ = _loss(0.0, ratios=ones, ref_logp=torch.full((1, 3), -1.0), beta=0.1)
    assert torch.allclose(loss, torch.full((1, 3), 0.1 * (math.exp(-1) + 1 - 1)))


def test_token_mean_and_seq_mean():
    x = torch.tensor([[1.0, 1.0, 1.0], [3.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # padding values must not count
    assert aggregate(x, mask, "token-mean", 4, 2).item() == 1.5  # (1 + 1 + 1 + 3) / 4 tokens
    assert aggregate(x, mask, "seq-mean", 4, 2).item() == 2.0  # (1 + 3) / 2 rows
    for how in ("token-mean", "seq-mean"):  # micro-batches add up to the whole batch
        parts = aggregate(x[:1], mask[:1], how, 4, 2) + aggregate(x[1:], mask[1:], how, 4, 2)
        assert torch.isclose(parts, aggregate(x, mask, how, 4, 2))
