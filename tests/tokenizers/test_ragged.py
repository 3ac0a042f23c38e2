"""Ragged token tensors: indexing events gives the padded batch; batches stay within a slot budget."""

from __future__ import annotations

import pytest
import torch

from expmatrix.data.events import slot_batches
from expmatrix.tokenizers.base import take, to_device
from expmatrix.tokenizers.errors import TokenizerError
from expmatrix.tokenizers.ragged import Ragged, ragged_tokens


def _ragged() -> Ragged:  # events [1], [2, 3, 4], [5, 6]
    return Ragged(torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([0, 1, 4, 6]))


def test_indexing_events_pads_them_to_their_longest():
    r = _ragged()
    assert len(r) == 3 and r.shape == (3, 3) and r.dtype == torch.int64
    assert r[torch.tensor([2, 0])].tolist() == [[5, 6], [1, 0]]
    assert r[slice(1, 3)].tolist() == [[2, 3, 4], [5, 6, 0]]
    assert r[torch.tensor([0, 0])].tolist() == [[1], [1]]
    xyz = Ragged(torch.arange(12.0).view(6, 2), torch.tensor([0, 1, 4, 6]))
    assert xyz[torch.tensor([0])].tolist() == [[[0.0, 1.0]]] and xyz.shape == (3, 3, 2)
    tokens = to_device({"x": r, "y": torch.tensor([7, 8, 9])}, torch.device("cpu"))
    assert {k: v.tolist() for k, v in take(tokens, torch.tensor([1])).items()} == {"x": [[2, 3, 4]], "y": [8]}


@pytest.mark.parametrize("lengths,max_events,max_slots,want", [
    ([1, 3, 2], 8, 6, [(0, 2), (2, 3)]),  # 2 x 3 = 6 fits, 3 x 3 = 9 does not
    ([1, 3, 2], 2, 100, [(0, 2), (2, 3)]),  # at most 2 events
    ([10, 1, 1], 8, 4, [(0, 1), (1, 3)]),  # an event longer than the budget goes alone
    ([2, 2, 2, 2], 8, 8, [(0, 4)]),
])  # fmt: skip
def test_slot_batches_keep_order_and_budget(lengths, max_events, max_slots, want):
    assert [(s.start, s.stop) for s in slot_batches(lengths, max_events, max_slots)] == want


def test_ragged_tokens_keep_the_real_slots_of_every_chunk():
    chunks = [{"mask": torch.tensor([[True, False], [True, True]]), "x": torch.tensor([[1, 0], [2, 3]])},
              {"mask": torch.tensor([[True, True, True]]), "x": torch.tensor([[4, 5, 6]])}]  # fmt: skip
    tokens = ragged_tokens(chunks)
    assert tokens["x"][slice(0, 3)].tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
    assert tokens["mask"][slice(0, 3)].sum(1).tolist() == [1, 2, 3]
    with pytest.raises(TokenizerError, match="'g' has shape \\(2, 5\\)"):
        ragged_tokens([chunks[0] | {"g": torch.zeros(2, 5)}])
