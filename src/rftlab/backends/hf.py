"""The transformers backend: the static-cache decoder where it is exact (Llama-style models), else
`model.generate`; a row stops at the newline that ends its `#### N` line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rftlab.backends.base import ANSWER_LINE, EngineSettings, SamplingSettings
from rftlab.decoding import exact_decoder, generate_with_keys

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HFBackend:
    """Samples with a transformers model; `decoder` says which decoder runs (`static-cache` or `generate`)."""

    stop: tuple[str, ...] = ()

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.exact, self.decoder_reason = exact_decoder(model)
        self.decoder = "generate" if self.exact is None else "static-cache"
        if self.exact is None:  # slower, and its logits may differ in the last bits between batch shapes
            print(f"rftlab: decoder {self.decoder_reason}", file=sys.stderr)
        self.newline_tokens = {
            index for index in range(len(tokenizer)) if "\n" in tokenizer.decode([index], skip_special_tokens=True)
        }
        self.generated_tokens = 0
        self.context: int | None = getattr(model.config, "max_position_embeddings", None)

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
