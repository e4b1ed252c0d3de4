import pytest
import torch

from speechbrain_dsn.gating import GatingModule


@pytest.mark.parametrize("num_levels,expected", [(2, 21602), (3, 21667)])
def test_paper_gating_module_size(num_levels, expected):
    # Section IV-B: "approximately 21.7k parameters"
    assert sum(p.numel() for p in GatingModule(256, num_levels).parameters()) == expected


def test_eval_is_deterministic_argmax():
    gate = GatingModule(16, 3, channels=8, d_ffn=16, chunk_size=10, context=8).eval()
    y = torch.randn(2, 16, 45)
    a, b = gate(y), gate(y)
    assert torch.equal(a, b)
    assert torch.equal(a.argmax(-1), gate.logits(y).argmax(-1))
    assert torch.equal(a.sum(-1), torch.ones(2, 45))


def test_training_is_straight_through_gumbel():
    gate = GatingModule(16, 3, channels=8, d_ffn=16, chunk_size=10, context=8).train()
    y = torch.randn(2, 16, 45)
    samples = torch.stack([gate(y) for _ in range(20)])
    # hard one-hot in the forward pass, stochastic across draws
    assert torch.equal(samples.sum(-1), torch.ones(20, 2, 45))
    assert (samples != samples[0]).any()
    (samples[0] * torch.arange(3.0)).sum().backward()
    assert gate.classifier.weight.grad.abs().sum() > 0


def test_training_without_noise_is_straight_through_softmax():
    """noise=False: the argmax forward (no random draw), the softmax gradients of
    gumbel_softmax(hard=True) with zero noise."""
    assert GatingModule(16, 3).noise  # the paper's Gumbel noise is the default
    gate = GatingModule(16, 3, channels=8, d_ffn=16, chunk_size=10, context=8, tau=0.5, noise=False).train()
    y = torch.randn(2, 16, 45)
    state = torch.random.get_rng_state()
    gates = gate(y)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(gates, gate.eval()(y))
    weights = torch.randn(3)
    (gates * weights).sum().backward()
    grad = gate.classifier.weight.grad.clone()
    gate.zero_grad()
    soft = (gate.train().logits(y) / 0.5).softmax(-1)
    (soft * weights).sum().backward()
    assert torch.allclose(grad, gate.classifier.weight.grad, atol=1e-6) and grad.abs().sum() > 0


def test_bad_configuration():
    with pytest.raises(ValueError, match="at least 2 levels"):
        GatingModule(16, 1)
    with pytest.raises(ValueError, match="batch, channels, time"):
        GatingModule(16, 2)(torch.randn(16, 20))
