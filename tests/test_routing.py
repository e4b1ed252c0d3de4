import pytest
import torch

from speechbrain_dsn.engine import Route
from speechbrain_dsn.levels import Levels, slim_width


@pytest.mark.parametrize(
    "u,full,expected", [(0.125, 8, 1), (0.25, 8, 2), (0.5, 1024, 512), (0.75, 8, 6), (1.0, 1024, 1024), (0.3, 10, 3)]
)
def test_slim_width_is_ceil(u, full, expected):
    assert slim_width(u, full) == expected


@pytest.mark.parametrize("bad", [[], [0.0, 1.0], [1.5], [0.5, 0.5]])
def test_levels_reject_bad_sets(bad):
    with pytest.raises(ValueError):
        Levels(bad)


def test_level_index_rejects_values_outside_the_set():
    with pytest.raises(ValueError, match="not among the levels"):
        Levels((0.125, 1.0)).index(torch.tensor([0.3]))
    with pytest.raises(ValueError, match="not among the levels"):
        Levels((0.125, 1.0)).index(0.13)
    with pytest.raises(ValueError, match="not among the levels"):
        Levels((0.125, 1.0)).index(float("nan"))
    # one tolerance for every caller: float32 tracks of the levels map back exactly
    levels = Levels((0.125, 0.5, 1.0))
    assert levels.index(torch.tensor([0.125, 0.5, 1.0], dtype=torch.float32) + 5e-5).tolist() == [0, 1, 2]


def test_uniform_track_collapses_to_a_uniform_route():
    route = Route.from_levels(torch.full((3, 5), 2), num_levels=3)
    assert route.level == 2 and route.packs is None and not route.is_routed


def test_packs_hold_exactly_the_active_tokens_in_time_order():
    levels = torch.tensor([[0, 2, 1, 2], [0, 0, 0, 0], [1, 0, 2, 0]])
    route = Route.from_levels(levels, num_levels=3)
    # FFN groups partition the tokens by level
    flat = levels.reshape(-1)
    for k in range(3):
        tokens = route.order[route.bounds[k] : route.bounds[k + 1]]
        assert torch.equal(tokens, torch.nonzero(flat == k).squeeze(1))
    # group 0 is dense; group g holds the tokens with level >= g
    dense = route.packs[0]
    assert dense.valid is None and dense.start == 0 and dense.shape == (3, 4)
    for g in (1, 2):
        pack = route.packs[g]
        expected = torch.nonzero(flat >= g).squeeze(1)
        assert torch.equal(pack.token_idx, expected)
        # sequences without active tokens are dropped, the rest padded to the longest
        assert pack.valid.shape == (int((levels >= g).any(1).sum()), int((levels >= g).sum(1).max()))
        assert pack.slot_idx.numel() == expected.numel()


def test_empty_and_full_groups():
    route = Route.from_levels(torch.tensor([[0, 1], [1, 0]]), num_levels=3)
    assert route.packs[2] is None


def test_level_order_rows_and_pack_indices_are_consistent():
    levels = torch.tensor([[0, 2, 1, 2, 0], [0, 0, 0, 0, 2], [1, 0, 2, 0, 1]])
    route = Route.from_levels(levels, num_levels=3)
    flat = levels.reshape(-1)
    x = torch.randn(3, 5, 4)
    rows = route.sort(x)
    # rows are grouped by level, in time order within a level, and unsort inverts sort
    assert torch.equal(flat[route.order], flat.sort(stable=True).values)
    for k in range(3):
        tokens = torch.nonzero(flat == k).squeeze(1)
        assert torch.equal(rows[route.bounds[k] : route.bounds[k + 1]], x.reshape(-1, 4)[tokens])
    assert torch.equal(route.unsort(rows, x.shape), x)
    for g in (1, 2):
        pack = route.packs[g]
        suffix = rows[pack.start :]
        packed = suffix[pack.gather].view(*pack.valid.shape, 4)
        # every valid slot holds its token; scatter brings the packed rows back
        assert torch.equal(packed.reshape(-1, 4)[pack.slot_idx], x.reshape(-1, 4)[pack.token_idx])
        assert torch.equal(packed.reshape(-1, 4)[pack.scatter], suffix)


def test_head_groups_with_the_same_active_tokens_share_a_pack():
    route = Route.from_levels(torch.tensor([[0, 2], [2, 0]]), num_levels=3)
    assert route.packs[1] is route.packs[2]
