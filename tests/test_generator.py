"""Generation: incremental and reproducible, sliding past the context, stop strings, prompts."""

from __future__ import annotations

import pytest
import torch

from textweaver.config import ModelConfig
from textweaver.data.tokenizer import CharTokenizer
from textweaver.errors import TextweaverError
from textweaver.generation.generator import GenerationRequest, Generator
from textweaver.generation.sampling import SamplingOptions, next_tokens
from textweaver.models import build_model
from textweaver.models.rnn import INT8_MIN_WIDTH

VOCAB = ["<unk>", *"abcdefghij \n."]


def generator(kind: str = "transformer", context: int = 16) -> Generator:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, vocab_size=len(VOCAB), n_layer=2, n_embd=32, n_head=4, context=context)
    return Generator(build_model(cfg), CharTokenizer(VOCAB), ["abc def.", "ghij."], torch.device("cpu"))


def request(**kw: object) -> GenerationRequest:
    sampling = kw.pop("sampling", SamplingOptions(temperature=1.0))
    return GenerationRequest(sampling=sampling, **kw)  # type: ignore[arg-type]


def recomputed(g: Generator, prompt: str, length: int, sampling: SamplingOptions) -> str:
    """The reference: re-run the model over the whole window for every token (the Keras recipe), no state kept."""
    gen = torch.Generator().manual_seed(0)
    ids = g.prompt_ids(prompt).tolist()
    with torch.inference_mode():
        for _ in range(length):
            logits, _ = g.model(torch.tensor([ids[-g.model.config.context :]]))  # (1, T, V)
            ids.append(int(next_tokens(logits[:, -1], sampling, gen)[0]))
    return g.tokenizer.decode(ids)


@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer"])
def test_output_is_prompt_plus_exactly_length_characters(kind: str) -> None:
    text = generator(kind).generate(request(prompt="abc", length=37, seed=1))[0]
    assert text.startswith("abc") and len(text) == 3 + 37
    assert set(text) <= set(VOCAB[1:])  # <unk> is never produced


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_same_seed_same_text_and_other_seed_other_text(kind: str) -> None:
    g = generator(kind)
    a = g.generate(request(prompt="ab", length=60, seed=7))
    assert a == g.generate(request(prompt="ab", length=60, seed=7))
    assert a != g.generate(request(prompt="ab", length=60, seed=8))


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_incremental_generation_equals_recomputing_the_window_each_token(kind: str) -> None:
    """Within the context the cached path must choose exactly what full recomputation chooses."""
    g = generator(kind, context=64)
    greedy = SamplingOptions(temperature=0.0)
    fast = g.generate(request(prompt="abc de", length=50, sampling=greedy))[0]
    assert fast == recomputed(g, "abc de", 50, greedy)


def test_transformer_slides_its_window_exactly_as_the_reference_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its context the transformer keeps the last 3/4 of the window and goes on from there. The
    reference recomputes every step from scratch over the window that rule defines; the generator's
    cached logits must equal it at every one of 200 steps (the window of 16 slides ~50 times)."""
    import textweaver.generation.generator as generate_module

    g = generator("transformer", context=16)
    recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_next_tokens = generate_module.next_tokens

    def spy(logits: torch.Tensor, *args: object) -> torch.Tensor:
        tokens = real_next_tokens(logits, *args)  # type: ignore[arg-type]
        recorded.append((logits.clone(), tokens.clone()))
        return tokens

    monkeypatch.setattr(generate_module, "next_tokens", spy)
    prompt = "abcdefghij abcdefghij"  # 21 tokens: already past the context
    text = g.generate(request(prompt=prompt, length=200, seed=3))[0]
    assert len(text) == 21 + 200 and len(recorded) == 200
    ids = g.tokenizer.encode(prompt).tolist()
    context, keep = 16, max(1, int(16 * generate_module.SLIDE_KEEP))
    start, slides = len(ids) - context, 0
    with torch.no_grad():
        for logits, tokens in recorded:
            expected = g.model(torch.tensor([ids[start:]]))[0][0, -1]
            assert torch.allclose(logits[0], expected, atol=1e-5, rtol=1e-5), f"at {len(ids)} tokens"
            ids.append(int(tokens[0]))
            if len(ids) - start > context:  # the rule: rebuild from the last `keep` tokens
                start, slides = len(ids) - keep, slides + 1
    assert g.tokenizer.decode(ids) == text and slides >= 40


def test_batch_of_samples_are_generated_together_and_differ() -> None:
    texts = generator().generate(request(prompt="a", length=40, num_samples=6, seed=2))
    assert len(texts) == 6 and all(len(t) == 41 for t in texts)
    assert len(set(texts)) > 1


def test_no_prompt_draws_a_start_sentence_from_the_corpus() -> None:
    text = generator().generate(request(prompt=None, length=5, seed=4))[0]
    assert text[:-5] in ("abc def.", "ghij.")


def test_stop_string_ends_the_sample_and_is_not_included() -> None:
    g = generator()
    for seed in range(20):
        full = g.generate(request(prompt="a", length=80, seed=seed))[0]
        if "." in full[1:]:
            cut = g.generate(request(prompt="a", length=80, seed=seed, stop="."))[0]
            assert cut == full[: full.index(".", 1)]
            return
    pytest.fail("no sample contained the stop string")


def test_streamed_pieces_join_to_the_generated_text() -> None:
    g = generator()
    pieces = [p[0] for p in g.stream(request(prompt="ab", length=30, seed=5))]
    assert pieces[0] == "ab"
    assert "".join(pieces) == g.generate(request(prompt="ab", length=30, seed=5))[0]


def test_unknown_prompt_characters_warn_once_and_still_generate(capsys: pytest.CaptureFixture[str]) -> None:
    text = generator().generate(request(prompt="abz€", length=5, seed=1))[0]
    err = capsys.readouterr().err
    assert "'z'" in err and "'€'" in err and err.count("warning") == 1
    assert text.startswith("abz€") and len(text) == 9


def test_prompt_longer_than_the_context_is_cut_to_its_end() -> None:
    text = generator(context=16).generate(request(prompt="abcdefghij" * 10, length=10, seed=1))[0]
    assert len(text) == 110


@pytest.mark.parametrize(("kw", "message"), [
    ({"length": 0}, "--length"), ({"num_samples": 0}, "--num-samples"), ({"stop": ""}, "--stop"),
    ({"sampling": SamplingOptions(temperature=-0.5)}, "--temperature"),
    ({"sampling": SamplingOptions(top_p=0.0)}, "--top-p"),
])  # fmt: skip
def test_bad_requests_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(TextweaverError, match=message):
        generator().generate(request(prompt="a", **kw))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_frozen_rnn_prepares_its_step_weights_once_and_a_training_one_every_time(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded model must not re-pack (int8 packing of a base costs tens of milliseconds per call); samples
    during training must use the weights as they are now, after an optimizer step that no cache can see
    (fused AdamW leaves the parameters' version counters as they were)."""
    frozen, training = generator(kind), generator(kind)
    frozen.frozen = True
    prepared = []
    original = type(frozen.model).cell_weights
    monkeypatch.setattr(
        type(frozen.model), "cell_weights", lambda self, **kw: prepared.append(1) or original(self, **kw)
    )
    greedy = request(prompt="abc", length=20, seed=0, sampling=SamplingOptions(temperature=0.0))
    first = frozen.generate(greedy)
    assert frozen.generate(greedy) == first and len(prepared) == 1
    assert training.generate(greedy) == first and training.generate(greedy) == first and len(prepared) == 3
    net = training.model
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.5, fused=True)
    net(torch.tensor([[1, 2, 3, 4]]), targets=torch.tensor([[2, 3, 4, 5]]))[0].backward()
    versions = [p._version for p in net.rnn.parameters()]
    optimizer.step()
    assert [p._version for p in net.rnn.parameters()] == versions  # invisible to a version-keyed cache
    fresh = Generator(net, training.tokenizer, [], torch.device("cpu"))
    after = training.generate(greedy)
    assert after != first and after == fresh.generate(greedy)


def test_a_wide_rnn_generates_with_int8_steps_and_a_narrow_one_exactly() -> None:
    torch.manual_seed(0)
    wide = Generator(build_model(ModelConfig(kind="lstm", vocab_size=len(VOCAB), n_layer=1, n_embd=INT8_MIN_WIDTH)),
                     CharTokenizer(VOCAB), [], torch.device("cpu"))  # fmt: skip
    assert wide.int8 and not generator("lstm").int8 and not generator("transformer").int8
    greedy = request(prompt="abc", length=30, seed=0, sampling=SamplingOptions(temperature=0.0))
    text = wide.generate(greedy)
    wide.int8 = False
    assert wide.generate(greedy) == text  # random weights: the same greedy choices either way
