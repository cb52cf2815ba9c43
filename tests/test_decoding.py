"""The fast decoder only where it is exact; keyed sampling through `model.generate` everywhere else.

Tiny random models of several architectures, built here: greedy parity with `model.generate` over more
than 64 new tokens (the cache grows), with rows ending early by EOS and by `stop` (the batch compacts).
"""

from functools import partial

import pytest
import torch
import transformers

from rftlab.decoding import StaticCacheDecoder, _prefill_batches, exact_decoder, generate_with_keys

VOCAB, NEW = 160, 66
STOP_AFTER = {0: 5, 3: 9}  # rows that `stop` ends after this many tokens
ARCHITECTURES = {
    "llama-gqa": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {"use_sliding_window": False}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "smollm3": ("SmolLM3Config", {"no_rope_layers": [1, 0]}),
    "granite": (
        "GraniteConfig",
        {"embedding_multiplier": 6.0, "residual_multiplier": 0.3, "logits_scaling": 4.0, "attention_multiplier": 0.1},
    ),
}
EXACT = ["llama-gqa", "qwen2", "mistral", "smollm3"]


def tiny_model(architecture: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A random 2-layer model with grouped-query attention; biases and norm weights random too."""
    name, extra = ARCHITECTURES[architecture]
    config = getattr(transformers, name)(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def prompts(lengths=(4, 9, 2, 6, 11), seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def hf_greedy(model, batch: list[list[int]], eos: int) -> list[list[int]]:
    """`model.generate`'s greedy tokens after each (left-padded) prompt."""
    longest = max(map(len, batch))
    ids = torch.tensor([[0] * (longest - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in batch])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                             eos_token_id=eos, pad_token_id=0)  # fmt: skip
    return out[:, longest:].tolist()


def stopper():
    """Ends the rows of STOP_AFTER after so many tokens."""
    seen: dict[int, int] = {}

    def stop(row: int, token: int) -> bool:
        seen[row] = seen.get(row, 0) + 1
        return seen[row] == STOP_AFTER.get(row)

    return stop


def check_greedy_parity(model, *decoders) -> None:
    """Each decoder (the generate signature) == `model.generate` greedy, rows ending early by EOS and `stop`."""
    batch = prompts()
    free = hf_greedy(model, batch, eos=VOCAB + 1)  # no EOS: every row runs NEW tokens
    assert all(len(row) == NEW for row in free)
    # EOS: a token row 1 emits early (as rows 0 and 3 stop), rows 2 and 4 never: they run past 64 tokens
    eos = next(t for i, t in enumerate(free[1]) if i >= 4 and t not in free[1][:i] + free[2] + free[4])
    expected = []
    for row, tokens in enumerate(free):
        tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
        expected.append(tokens[: STOP_AFTER.get(row, NEW)])
    assert len(expected[1]) < NEW - 1 and len(expected[2]) == len(expected[4]) == NEW  # compacts; grows
    assert [row[: len(e)] for row, e in zip(hf_greedy(model, batch, eos=eos), expected, strict=True)] == expected
    for decode in decoders:
        ours = decode(batch, [10, 11, 12, 13, 14], max_new_tokens=NEW, temperature=0.0, eos_token_id=eos,
                      pad_token_id=0, stop=stopper())  # fmt: skip
        assert ours == expected


@pytest.mark.parametrize("architecture", EXACT)
def test_exact_architectures_get_the_static_decoder_and_match_generate(architecture):
    model = tiny_model(architecture)
    decoder, reason = exact_decoder(model)
    assert decoder is not None, reason
    assert reason.startswith(f"static-cache ({model.config.model_type}, logits match to ")
    check_greedy_parity(model, decoder.generate, partial(generate_with_keys, model))


def test_granite_is_left_to_generate_with_the_same_semantics():
    model = tiny_model("granite")
    decoder, reason = exact_decoder(model)
    assert decoder is None and reason == "generate: granite is not on the fast decoder's allow-list"
    check_greedy_parity(model, partial(generate_with_keys, model))


def test_the_logits_check_catches_a_model_that_only_looks_like_llama():
    granite = tiny_model("granite")
    granite.config.model_type = "llama"  # Llama's modules and config, Granite's multipliers in forward
    decoder, reason = exact_decoder(granite)
    assert decoder is None and reason.startswith("generate: llama's logits from the static-cache decoder are off by")

    model = tiny_model("llama-gqa")
    forward = model.forward

    def scaled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 1.01
        return out

    model.forward = scaled
    assert exact_decoder(model)[0] is None


def test_sliding_windows_that_can_bind_and_other_layouts_are_refused():
    assert exact_decoder(tiny_model("llama-gqa"))[0] is not None
    mistral = tiny_model("mistral")
    mistral.config.sliding_window = 64
    assert exact_decoder(mistral) == (None, "generate: mistral's sliding window (64) is shorter than its context (256)")
    mistral.config.sliding_window = 256
    assert exact_decoder(mistral)[0] is not None
    with pytest.raises(ValueError, match="Llama layout"):
        StaticCacheDecoder(torch.nn.Linear(2, 2))


def test_the_check_leaves_rng_and_the_decoder_unchanged():
    model = tiny_model("llama-gqa")
    batch, keys = prompts(), [5, 6, 7, 8, 9]
    settings = {"max_new_tokens": 40, "temperature": 1.0, "top_p": 0.9, "eos_token_id": 2, "pad_token_id": 0}
    fresh = StaticCacheDecoder(model).generate(batch, keys, **settings)
    state = torch.get_rng_state()
    decoder, _ = exact_decoder(model)
    assert torch.equal(torch.get_rng_state(), state) and not model.training
    assert decoder.generate(batch, keys, **settings) == fresh


def sampled(decode, batch, keys, **extra):
    settings = {"max_new_tokens": NEW, "temperature": 1.0, "top_p": 0.95, "eos_token_id": VOCAB + 1}
    return decode(batch, keys, pad_token_id=0, **settings | extra)


def test_generate_with_keys_paths_do_not_depend_on_the_batch():
    model = tiny_model("granite", seed=1)
    batch = prompts((6, 6, 6, 6), seed=1)
    state = torch.get_rng_state()
    together = sampled(partial(generate_with_keys, model), batch, [20, 21, 22, 23])
    assert torch.equal(torch.get_rng_state(), state)
    alone = sampled(partial(generate_with_keys, model), [batch[2]], [22])
    assert alone == [together[2]] and together[0] != together[1]
    model.generation_config.repetition_penalty = 3.0  # the model's own generation settings stay out
    assert sampled(partial(generate_with_keys, model), batch, [20, 21, 22, 23]) == together
    assert model.generation_config.repetition_penalty == 3.0


def test_both_decoders_draw_the_same_paths():
    model = tiny_model("qwen2", seed=2)
    batch, keys = prompts((7, 7, 7, 7), seed=2), [30, 31, 32, 33]
    decoder, _ = exact_decoder(model)
    assert sampled(decoder.generate, batch, keys) == sampled(partial(generate_with_keys, model), batch, keys)


def test_generate_with_keys_trims_at_eos_and_stop():
    model = tiny_model("granite", seed=3)
    batch, keys = prompts((5, 3, 8), seed=3), [40, 41, 42]
    decode = partial(generate_with_keys, model)
    free = sampled(decode, batch, keys)
    eos = free[0][4]
    cut = [row[: row.index(eos)] if eos in row else row for row in free]
    assert len(cut[0]) <= 4 and sampled(decode, batch, keys, eos_token_id=eos) == cut
    told: list[tuple[int, int]] = []

    def stop(row: int, token: int) -> bool:
        told.append((row, token))
        return row == 1 and len([r for r, _ in told if r == 1]) == 3

    assert sampled(decode, batch, keys, stop=stop) == [free[0], free[1][:3], free[2]]
    assert [t for r, t in told if r == 1] == free[1][:3] and [t for r, t in told if r == 0] == free[0]


@pytest.mark.parametrize(
    ("order", "ends"),
    [((0, 1, 0, 2, 0, 1), {0: 3, 1: 5, 3: 2}), ((0, 0, 1, 1, 2, 2), {0: 3, 4: 5, 5: 2})],
    ids=["interleaved", "in-order"],
)
def test_rows_that_share_a_prompt_match_generate_as_they_leave_the_batch(order, ends):
    model = tiny_model("llama-gqa", seed=4)
    decoder, _ = exact_decoder(model)
    distinct = prompts((4, 9, 2), seed=4)
    batch = [distinct[i] for i in order]  # the batch compacts at half its rows; the third prompt's group leaves
    free = hf_greedy(model, batch, eos=VOCAB + 1)
    seen: dict[int, int] = {}

    def stop(row: int, token: int) -> bool:
        seen[row] = seen.get(row, 0) + 1
        return seen[row] == ends.get(row)

    ours = decoder.generate(batch, list(range(6)), max_new_tokens=NEW, temperature=0.0, eos_token_id=VOCAB + 1,
                            pad_token_id=0, stop=stop)  # fmt: skip
    assert ours == [tokens[: ends.get(row, NEW)] for row, tokens in enumerate(free)]


def test_prefill_batches_of_prompts_by_length_give_the_paths_of_prompts_alone(monkeypatch):
    model = tiny_model("qwen2", seed=5)
    decoder, _ = exact_decoder(model)
    batch = prompts((4, 9, 2, 6, 11, 3, 17, 9, 30), seed=5)
    keys = list(range(50, 50 + len(batch)))
    one_batch = sampled(decoder.generate, batch, keys)
    monkeypatch.setattr("rftlab.decoding.PREFILL_TOKENS", 20)  # six prefill batches, one prompt wider than that
    assert _prefill_batches([len(p) for p in batch]) == [[2, 5, 0], [3, 1], [7], [4], [6], [8]]
    assert sampled(decoder.generate, batch, keys) == one_batch
    assert [sampled(decoder.generate, [p], [key])[0] for p, key in zip(batch, keys, strict=True)] == one_batch
