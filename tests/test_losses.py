"""Both contrastive losses against a hand computation with explicit loops."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import ContrastiveLoss, sigmoid_contrastive_loss, softmax_contrastive_loss


def _embeddings(n: int = 5, d: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


def test_softmax_loss_matches_hand_computation() -> None:
    img, txt = _embeddings()
    scale = 10.0
    x, y = img.numpy(), txt.numpy()
    n = len(x)
    total = 0.0
    for i in range(n):
        logits_i2t = [scale * float(x[i] @ y[j]) for j in range(n)]
        logits_t2i = [scale * float(y[i] @ x[j]) for j in range(n)]
        total += -logits_i2t[i] + math.log(sum(math.exp(v) for v in logits_i2t))
        total += -logits_t2i[i] + math.log(sum(math.exp(v) for v in logits_t2i))
    expected = total / (2 * n)
    got = softmax_contrastive_loss(img, txt, torch.tensor(math.log(scale), dtype=torch.float64))
    assert got.item() == pytest.approx(expected, abs=1e-10)


def test_sigmoid_loss_matches_hand_computation() -> None:
    img, txt = _embeddings(seed=1)
    t, b = 10.0, -10.0
    x, y = img.numpy(), txt.numpy()
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = t * float(x[i] @ y[j]) + b
            total += math.log(1.0 + math.exp(-z * logit))
    expected = total / n
    got = sigmoid_contrastive_loss(
        img, txt, torch.tensor(math.log(t), dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    )
    assert got.item() == pytest.approx(expected, abs=1e-10)


def test_initial_temperature_and_bias_follow_the_papers() -> None:
    softmax, sigmoid = ContrastiveLoss("softmax"), ContrastiveLoss("sigmoid")
    assert softmax.log_scale.item() == pytest.approx(math.log(10))
    assert softmax.bias is None
    assert sigmoid.log_scale.item() == pytest.approx(math.log(10))
    assert sigmoid.bias.item() == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="softmax"):
        ContrastiveLoss("hinge")


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_loss_rewards_matching_pairs(kind: str) -> None:
    img, _ = _embeddings(n=8, d=16, seed=2)
    random_txt = F.normalize(torch.randn(8, 16, dtype=torch.float64), dim=-1)
    loss = ContrastiveLoss(kind).double()
    assert loss(img, img).item() < loss(img, random_txt).item()


def test_temperature_is_learned() -> None:
    img, txt = _embeddings()
    loss = ContrastiveLoss("softmax")
    loss(img.float(), txt.float()).backward()
    assert loss.log_scale.grad is not None and np.isfinite(loss.log_scale.grad.item())
