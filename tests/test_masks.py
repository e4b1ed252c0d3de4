import pytest
import torch
import torch.nn.functional as F

from speechbrain_dsn.masks import nested_mask


@pytest.mark.parametrize("counts", [(2, 5, 8), (3, 3, 8), (8,)])
def test_nested_mask_equals_dense_mask_in_value_and_gradient(counts):
    K, D = len(counts), counts[-1]
    table = (torch.arange(D)[None, :] < torch.tensor(counts)[:, None]).float()
    x = torch.randn(3, 4, D, requires_grad=True)
    logits = torch.randn(3, 4, K, requires_grad=True)
    gates = F.gumbel_softmax(logits, tau=1.0, hard=True, dim=-1)
    weight = torch.randn(3, 4, D)
    dense = x * (gates @ table)
    nested = nested_mask(x, gates, counts)
    torch.testing.assert_close(nested, dense)
    for a, b in zip(
        torch.autograd.grad((dense * weight).sum(), (x, logits), retain_graph=True),
        torch.autograd.grad((nested * weight).sum(), (x, logits), retain_graph=True),
    ):
        torch.testing.assert_close(b, a)
