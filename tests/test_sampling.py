"""Specification of textweaver.generation.sampling: choosing the next token from logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from textweaver.errors import TextweaverError
from textweaver.generation.sampling import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    SamplingOptions,
    draw,
    next_tokens,
    probabilities,
)

N = 4000  # samples per distribution: enough that every allowed token shows up


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_logits(rows: int, vocab: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=generator(seed)) * scale  # (B, V), distinct values


def repeated(row: torch.Tensor, n: int = N) -> torch.Tensor:
    return row.unsqueeze(0).expand(n, -1).clone()  # (n, V): n draws from one distribution


def sample_ids(logits: torch.Tensor, options: SamplingOptions, seed: int = 0, **kwargs: object) -> set[int]:
    return set(next_tokens(logits, options, generator(seed), **kwargs).tolist())  # type: ignore[arg-type]


def best_known(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token of each row other than id 0 (<unk>)."""
    return logits[:, 1:].argmax(dim=-1) + 1  # (B,)


# --- greedy -----------------------------------------------------------------------------------


def test_temperature_zero_is_argmax() -> None:
    logits = random_logits(64, 100)
    logits[:, 0] = -100.0  # keep <unk> out of the picture here
    out = next_tokens(logits.clone(), SamplingOptions(temperature=0))
    assert out.shape == (64,) and out.dtype == torch.long
    assert torch.equal(out, logits.argmax(dim=-1))


def test_greedy_skips_unk_even_when_it_is_the_most_likely() -> None:
    logits = random_logits(64, 100)
    logits[:, 0] = 100.0
    assert torch.equal(next_tokens(logits.clone(), SamplingOptions(temperature=0)), best_known(logits))


@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(temperature=1.0, top_k=1),
        SamplingOptions(temperature=1.5, top_k=1),
        SamplingOptions(temperature=1.0, top_p=1e-6),
        SamplingOptions(temperature=0.7, top_p=1e-3, top_k=10),
    ],
    ids=["top_k=1", "top_k=1-hot", "tiny-top_p", "tiny-top_p-and-top_k"],
)
def test_keeping_only_the_best_token_equals_greedy(options: SamplingOptions) -> None:
    logits = random_logits(N, 50)
    greedy = next_tokens(logits.clone(), SamplingOptions(temperature=0))
    assert torch.equal(next_tokens(logits.clone(), options, generator()), greedy)
    assert torch.equal(greedy, best_known(logits))


# --- top-k and top-p --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5, 12])
def test_top_k_samples_exactly_the_k_most_likely_known_tokens(k: int) -> None:
    row = random_logits(1, 40, seed=k, scale=0.5)[0]
    allowed = set((torch.topk(row[1:], k).indices + 1).tolist())
    assert sample_ids(repeated(row), SamplingOptions(temperature=1.0, top_k=k)) == allowed


def test_top_k_larger_than_the_vocabulary_keeps_every_known_token() -> None:
    row = torch.zeros(6)
    assert sample_ids(repeated(row), SamplingOptions(temperature=1.0, top_k=100)) == {1, 2, 3, 4, 5}


def nucleus(row: torch.Tensor, p: float, temperature: float = 1.0) -> set[int]:
    """The smallest set of known tokens, most likely first, whose probability reaches ``p``."""
    logits = row[1:].double().numpy() / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    mass_before = np.cumsum(probs[order]) - probs[order]
    return {int(i) + 1 for i in order[mass_before < p]}


@pytest.mark.parametrize(("p", "temperature"), [(0.3, 1.0), (0.6, 1.0), (0.9, 1.0), (0.6, 0.5), (0.6, 2.0)])
def test_top_p_samples_exactly_the_nucleus(p: float, temperature: float) -> None:
    row = random_logits(1, 30, seed=7, scale=1.0)[0]
    allowed = nucleus(row, p, temperature)
    assert 1 < len(allowed) < 29  # a real cut, neither greedy nor everything
    assert sample_ids(repeated(row), SamplingOptions(temperature=temperature, top_p=p)) == allowed


def test_top_k_and_top_p_together_sample_within_both() -> None:
    row = random_logits(1, 30, seed=3, scale=1.0)[0]
    top5 = set((torch.topk(row[1:], 5).indices + 1).tolist())
    only_top5 = torch.full_like(row, -math.inf)
    only_top5[list(top5)] = row[list(top5)]
    allowed = nucleus(only_top5, 0.5)  # top-k first, then the nucleus of what is left
    assert 1 < len(allowed) < 5
    assert sample_ids(repeated(row), SamplingOptions(temperature=1.0, top_k=5, top_p=0.5)) == allowed


def test_top_p_one_and_no_limits_can_sample_every_known_token() -> None:
    row = torch.zeros(8)
    for options in [SamplingOptions(temperature=1.0), SamplingOptions(temperature=1.0, top_p=1.0)]:
        assert sample_ids(repeated(row), options) == set(range(1, 8))


# --- <unk> ------------------------------------------------------------------------------------


def test_unk_is_never_sampled_by_default() -> None:
    row = torch.zeros(5)
    row[0] = 10.0  # <unk> is by far the most likely
    for options in [SamplingOptions(), SamplingOptions(temperature=2.0, top_k=1), SamplingOptions(top_p=0.01)]:
        assert 0 not in sample_ids(repeated(row), options)


def test_unk_can_be_allowed_or_another_id_banned() -> None:
    row = torch.zeros(5)
    row[0] = 10.0
    assert 0 in sample_ids(repeated(row), SamplingOptions(temperature=1.0), banned=None)
    assert sample_ids(repeated(torch.zeros(5)), SamplingOptions(temperature=1.0), banned=3) == {0, 1, 2, 4}


def test_a_vocabulary_of_only_unk_still_returns_a_token() -> None:
    assert next_tokens(torch.zeros(3, 1), SamplingOptions()).tolist() == [0, 0, 0]


# --- repetition penalty -----------------------------------------------------------------------


@pytest.mark.parametrize("level", [2.0, -2.0], ids=["positive-logits", "negative-logits"])
def test_repetition_penalty_lowers_the_frequency_of_recent_tokens(level: float) -> None:
    logits = torch.full((N, 5), level)
    recent = torch.tensor([[1, 2, 1]]).expand(N, -1)  # (N, W): tokens 1 and 2 were just used

    def frequencies(penalty: float) -> np.ndarray:
        options = SamplingOptions(temperature=1.0, repetition_penalty=penalty)
        ids = next_tokens(logits.clone(), options, generator(), recent)
        return np.bincount(ids.numpy(), minlength=5) / N

    plain, penalised = frequencies(1.0), frequencies(2.0)
    assert np.allclose(plain, [0, 0.25, 0.25, 0.25, 0.25], atol=0.03)  # four equally likely known tokens
    # the penalty pushes a recent token's logit towards "less likely": 2 -> 1, -2 -> -4
    used = np.exp(level / 2 if level > 0 else level * 2)
    fresh = np.exp(level)
    expected = np.array([0, used, used, fresh, fresh]) / (2 * used + 2 * fresh)
    assert np.allclose(penalised, expected, atol=0.03)
    assert penalised[1] < 0.25 - 0.08 and penalised[2] < 0.25 - 0.08  # the unpenalised odds are 1 in 4


def test_repetition_penalty_can_change_the_greedy_choice_per_row() -> None:
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0], [0.0, 3.0, 2.0, 1.0]])
    recent = torch.tensor([[1, 1], [3, 2]])  # row 0 just used token 1; row 1 did not
    options = SamplingOptions(temperature=0, repetition_penalty=2.0)
    assert next_tokens(logits, options, recent=recent).tolist() == [2, 1]


def test_penalty_of_one_changes_nothing() -> None:
    logits = random_logits(N, 20)
    recent = torch.randint(0, 20, (N, 8), generator=generator(1))
    options = SamplingOptions(temperature=1.0, repetition_penalty=1.0)
    with_recent = next_tokens(logits.clone(), options, generator(), recent)
    assert torch.equal(with_recent, next_tokens(logits.clone(), options, generator()))


# --- reproducibility --------------------------------------------------------------------------


@pytest.mark.parametrize("options", [SamplingOptions(), SamplingOptions(top_k=10, top_p=0.9, temperature=1.3)])
def test_same_generator_seed_gives_the_same_samples(options: SamplingOptions) -> None:
    logits = random_logits(256, 100, scale=0.5)
    first = next_tokens(logits.clone(), options, generator(42))
    assert torch.equal(first, next_tokens(logits.clone(), options, generator(42)))
    assert not torch.equal(first, next_tokens(logits.clone(), options, generator(43)))


def test_the_callers_logits_are_left_unchanged() -> None:
    logits = random_logits(4, 10)
    before = logits.clone()
    next_tokens(logits, SamplingOptions(), generator())
    assert torch.equal(logits, before)


def test_half_precision_logits_are_accepted() -> None:
    logits = random_logits(16, 10).half()
    out = next_tokens(logits, SamplingOptions(temperature=0))
    assert torch.equal(out, best_known(logits.float()))


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SamplingOptions(temperature=-0.1), "--temperature must be >= 0"),
        (SamplingOptions(temperature=math.nan), "--temperature must be >= 0"),
        (SamplingOptions(top_p=0.0), r"--top-p must be in \(0, 1\]"),
        (SamplingOptions(top_p=-0.5), r"--top-p must be in \(0, 1\]"),
        (SamplingOptions(top_p=1.01), r"--top-p must be in \(0, 1\]"),
        (SamplingOptions(top_p=math.nan), r"--top-p must be in \(0, 1\]"),
        (SamplingOptions(top_k=0), "--top-k must be at least 1, got 0"),
        (SamplingOptions(top_k=-3), "--top-k must be at least 1, got -3"),
        (SamplingOptions(repetition_penalty=0.0), "--repetition-penalty must be positive"),
        (SamplingOptions(repetition_penalty=math.nan), "--repetition-penalty must be positive"),
        (SamplingOptions(repetition_window=0), "repetition window must be at least 1"),
    ],
)
def test_validate_rejects_bad_options_with_the_flag_name(options: SamplingOptions, message: str) -> None:
    with pytest.raises(TextweaverError, match=message):
        options.validate()


@pytest.mark.parametrize("field", ["temperature", "repetition_penalty"])
def test_validate_accepts_the_declared_limits_and_refuses_just_beyond(field: str) -> None:
    flag = "--" + field.replace("_", "-")
    for value in (MIN_TEMPERATURE, MAX_TEMPERATURE):
        SamplingOptions(**{field: value}).validate()  # type: ignore[arg-type]
    for value in (math.nextafter(MIN_TEMPERATURE, 0.0), math.nextafter(MAX_TEMPERATURE, math.inf), math.inf):
        with pytest.raises(TextweaverError, match=f"{flag} must be"):
            SamplingOptions(**{field: value}).validate()  # type: ignore[arg-type]


def test_validate_accepts_top_p_top_k_and_window_at_their_limits_and_refuses_just_beyond() -> None:
    smallest = math.nextafter(0.0, 1.0)  # the smallest positive float: (0, 1] is open at 0
    for options in (SamplingOptions(top_p=1.0), SamplingOptions(top_p=smallest), SamplingOptions(top_k=1),
                    SamplingOptions(repetition_penalty=2.0, repetition_window=1)):  # fmt: skip
        options.validate()
    refused = [
        (SamplingOptions(top_p=math.nextafter(1.0, 2.0)), "--top-p must be in"),
        (SamplingOptions(top_p=0.0), "--top-p must be in"),
        (SamplingOptions(top_k=0), "--top-k must be at least 1"),
        (SamplingOptions(repetition_window=0), "repetition window must be at least 1"),
    ]
    for options, message in refused:
        with pytest.raises(TextweaverError, match=message):
            options.validate()


@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(temperature=MIN_TEMPERATURE),
        SamplingOptions(temperature=MAX_TEMPERATURE),
        SamplingOptions(temperature=MIN_TEMPERATURE, repetition_penalty=MAX_TEMPERATURE),
        SamplingOptions(temperature=MIN_TEMPERATURE, repetition_penalty=MIN_TEMPERATURE),
        SamplingOptions(temperature=MAX_TEMPERATURE, repetition_penalty=MAX_TEMPERATURE),
        SamplingOptions(temperature=MAX_TEMPERATURE, repetition_penalty=MIN_TEMPERATURE, top_k=1),
        SamplingOptions(temperature=MIN_TEMPERATURE, top_p=math.nextafter(0.0, 1.0)),
    ],
)
def test_at_the_limits_the_odds_stay_finite(options: SamplingOptions) -> None:
    """What the limits are for: anywhere inside them the odds are numbers, never NaN or infinite."""
    logits = random_logits(8, 50, scale=30.0)  # (B, V) as sharp as a confident model's
    recent = torch.randint(1, 50, (8, 64), generator=generator(1))  # (B, W)
    probs = probabilities(logits, options, recent)
    assert torch.isfinite(probs).all() and (probs >= 0).all() and (probs.sum(dim=-1) > 0).all(), probs
    assert (probs[:, 0] == 0).all()
    ids = next_tokens(logits, options, generator(), recent)
    assert ((ids >= 1) & (ids < 50)).all()


def test_the_coldest_temperature_is_greedy_and_the_hottest_uniform() -> None:
    logits = random_logits(8, 50, scale=30.0)
    assert torch.equal(
        next_tokens(logits, SamplingOptions(temperature=MIN_TEMPERATURE), generator()), best_known(logits)
    )
    hottest = probabilities(logits, SamplingOptions(temperature=MAX_TEMPERATURE))[:, 1:]
    assert torch.allclose(hottest / hottest.sum(dim=-1, keepdim=True), torch.full_like(hottest, 1 / 49), rtol=1e-3)


def test_draw_follows_the_weights_and_never_picks_a_zero_weight() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 2.0]]).repeat(N // 2, 1)
    ids = draw(weights, generator())
    first, second = ids[0::2].numpy(), ids[1::2].numpy()
    assert set(first) <= {1, 3} and set(second) == {4}
    assert abs((first == 3).mean() - 0.75) < 0.03  # proportional to the weights (rows need not sum to 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1e6), min_size=1, max_size=50).filter(lambda w: sum(w) > 0), st.integers(0, 2**32))
def test_draw_returns_an_index_of_positive_weight(weights: list[float], seed: int) -> None:
    t = torch.tensor([weights], dtype=torch.float32)
    if not t.sum() > 0:  # the weights all round to zero in float32
        return
    index = int(draw(t, torch.Generator().manual_seed(seed))[0])
    assert 0 <= index < len(weights) and weights[index] > 0
