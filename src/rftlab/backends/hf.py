"""The transformers backend: the static-cache decoder where it is exact (Llama-style models), else
`model.generate`; a row stops at the newline that ends its `#### N` line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rftlab.backends.base import ANSWER_LINE, EngineSettings, SamplingSettings
from rftlab.decoding import StaticCacheDecoder, supports

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HFBackend:
    """Samples with a transformers model; `decoder` says which decoder runs (`static-cache` or `generate`)."""

    stop: tuple[str, ...] = ()

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.exact, self.decoder_reason = exact_decoder(model)
        self.decoder = "generate" if self.exact is None else "static-cache"
        self.newline_tokens = {
            index for index in range(len(tokenizer)) if "\n" in tokenizer.decode([index], skip_special_tokens=True)
        }
        self.generated_tokens = 0

    def generate(
        self, prompts: Sequence[Sequence[int]], keys: Sequence[Sequence[int]], settings: SamplingSettings
    ) -> list[list[list[int]]]:
        rows = [(list(prompt), key) for prompt, row_keys in zip(prompts, keys, strict=True) for key in row_keys]
        outputs = iter(self._decode([ids for ids, _ in rows], [key for _, key in rows], settings))
        paths = [[next(outputs) for _ in row_keys] for row_keys in keys]
        self.generated_tokens += sum(len(ids) for question in paths for ids in question)
        return paths

    def _decode(self, prompts: list[list[int]], keys: list[int], settings: SamplingSettings) -> list[list[int]]:
        """New tokens of each row (one prompt and key each)."""
        options = {
            "max_new_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
            "stop": self._stopper(len(prompts)),
        }
        if self.exact is None:
            return generate_with_keys(self.model, prompts, keys, **options)
        return self.exact.generate(prompts, keys, **options)

    def _stopper(self, rows: int) -> Callable[[int, int], bool]:
        """Stops a row at the newline that ends its `#### N` line."""
        generated: list[list[int]] = [[] for _ in range(rows)]

        def stop(row: int, token: int) -> bool:
            generated[row].append(token)
            if token not in self.newline_tokens:
                return False
            text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
            start = text.find(ANSWER_LINE)
            return start >= 0 and "\n" in text[start:]

        return stop


def load(model_name: str, dtype: str, device: str, engine: EngineSettings | None, seed: int) -> HFBackend:
    """The registry's loader (`backends.base.load_backend`); `engine` is None and `seed` unused here."""
    from rftlab.models import load_model

    return HFBackend(*load_model(model_name, dtype=dtype, device=device))


# The decoders (the signatures of rftlab.decoding's exact_decoder and generate_with_keys) --------


def exact_decoder(model: PreTrainedModel) -> tuple[StaticCacheDecoder | None, str]:
    """The static-cache decoder where it runs the model exactly (else None), and why."""
    if supports(model):
        return StaticCacheDecoder(model), f"{type(model).__name__}: the Llama layout, the static-cache decoder"
    return None, f"{type(model).__name__}: not the Llama layout, model.generate"


def generate_with_keys(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    keys: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_token_id: int,
    pad_token_id: int,
    stop: Callable[[int, int], bool] | None = None,
) -> list[list[int]]:
    """`StaticCacheDecoder.generate` by `model.generate`, seeded per batch by its first key (not per row)."""
    import torch

    torch.manual_seed(keys[0])
    longest = max(map(len, prompts))
    ids = torch.tensor([[pad_token_id] * (longest - len(p)) + list(p) for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    sampling = temperature > 0
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=sampling,
            temperature=temperature if sampling else None, top_p=top_p if sampling else None, top_k=None,
            pad_token_id=pad_token_id, eos_token_id=eos_token_id,
        )  # fmt: skip
    rows = [[t for t in row if t not in (pad_token_id, eos_token_id)] for row in out[:, longest:].tolist()]
    return [_until(row, tokens, stop) for row, tokens in enumerate(rows)]


def _until(row: int, tokens: list[int], stop: Callable[[int, int], bool] | None) -> list[int]:
    """The tokens up to the one `stop` ends the row at (kept)."""
    for end, token in enumerate(tokens, start=1):
        if stop is not None and stop(row, token):
            return tokens[:end]
    return tokens
