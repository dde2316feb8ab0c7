"""ar-llama's token picker: greedy, temperature, top-k and top-p filtering, and the settings it refuses.

The sampling distribution is checked by drawing many rows from fixed logits and comparing the
frequencies with softmax(filtered logits / temperature) computed here by hand.
"""

from __future__ import annotations

import pytest
import torch

from hitbench_builtin.generators.ar_llama.sampling import _pick
from hitvideo_bench.errors import BadInput

#: fixture logits over a vocabulary of 6, every value distinct so the order is unambiguous
FIXTURE_LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0])
ROWS = 40_000


def frequencies(temperature: float, top_k=None, top_p=None, seed: int = 0) -> torch.Tensor:
    """How often each token is picked over ``ROWS`` rows of the fixture logits."""
    gen = torch.Generator().manual_seed(seed)
    picks = _pick(FIXTURE_LOGITS.expand(ROWS, -1).clone(), gen, temperature, top_k, top_p)
    return torch.bincount(picks, minlength=FIXTURE_LOGITS.numel()).double() / ROWS


def test_temperature_divides_the_logits():
    """Kills: ``logits * temperature`` for ``logits / temperature`` in _pick."""
    for temperature in (0.5, 2.0):
        expected = (FIXTURE_LOGITS.double() / temperature).softmax(-1)
        assert torch.allclose(frequencies(temperature), expected, atol=0.01), temperature


def test_temperature_zero_is_greedy():
    """Kills: sampling at temperature 0 instead of taking the argmax."""
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, -1.0, 4.9]])
    assert _pick(logits, torch.Generator().manual_seed(0), 0.0, None, None).tolist() == [1, 0]


def test_top_k_keeps_only_the_k_largest_logits():
    """Kills: deleting the top-k ``masked_fill`` in _pick."""
    freq = frequencies(1.0, top_k=2)
    assert freq[2:].sum() == 0  # never outside the two largest
    expected = FIXTURE_LOGITS[:2].double().softmax(-1)  # renormalised over the kept two
    assert torch.allclose(freq[:2], expected, atol=0.01)
    assert torch.allclose(frequencies(1.0, top_k=6), FIXTURE_LOGITS.double().softmax(-1), atol=0.01)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    """Kills: ``> top_p`` on the cumulative mass without subtracting the token's own probability."""
    probs = FIXTURE_LOGITS.double().softmax(-1)  # about .48 .18 .11 .07 .04 .02
    p = float(probs[:2].sum()) + 0.01  # needs the third token to reach p
    freq = frequencies(1.0, top_p=p)
    assert freq[3:].sum() == 0 and (freq[:3] > 0).all()
    assert torch.allclose(freq[:3], probs[:3] / probs[:3].sum(), atol=0.01)


@pytest.fixture(scope="module")
def fixture_gen():
    """Fixture: the small ar-llama over a three-layer fixture pyramid from test_generator."""
    from test_generator import fixture_generator

    return fixture_generator()


@pytest.mark.parametrize("settings, bad", [({"top_k": 0}, "top_k=0"), ({"temperature": -0.5}, "temperature=-0.5"),
                                           ({"top_p": 0.0}, "top_p=0.0")])
def test_sampling_refuses_settings_out_of_range(fixture_gen, settings, bad):
    """Kills: dropping the ``top_k < 1`` or ``temperature < 0`` check in generate (each alone is refused)."""
    with pytest.raises(BadInput, match=bad):
        fixture_gen.sample(["x"], **settings)
