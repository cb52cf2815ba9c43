"""Batched decoding with a preallocated KV cache over a Hugging Face causal LM's own modules.

`StaticCacheDecoder` runs Llama-style models (Llama, Mistral without sliding window, Qwen2, SmolLM, the
toy models) in a tight loop: one forward pass per step over a static cache, no per-step bookkeeping.
Sampling draws Gumbel noise from a counter-based hash of (row key, step, token), so a row's path depends
only on its key and its logits: the same (seed, problem, sample index) gives the same path whatever
else is in the batch, and the k rows of a problem are independent draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
COMPACT_BELOW = 0.75
"""Finished rows leave the batch once fewer than this share of its rows are still running."""
GROW = 32
"""Cache slots added at a time. Attention reads the whole (contiguous) cache, with unused slots masked:
cheaper than reading a slice of a longer one, which copies it."""


def _signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (wrapping arithmetic): a counter-based hash."""
    x = x + _signed(_GOLDEN)
    x = (x ^ _shift_right(x, 30)) * _signed(_MIX1)
    x = (x ^ _shift_right(x, 27)) * _signed(_MIX2)
    return x ^ _shift_right(x, 31)


def uniform_noise(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) float64 noise of shape [rows, vocab], a pure function of (row key, step, token)."""
    row = splitmix64(splitmix64(keys) + step)
    tokens = torch.arange(vocab, dtype=torch.int64, device=keys.device) * _signed(_GOLDEN)
    bits = _shift_right(splitmix64(row[:, None] + tokens), 11)
    return (bits.to(torch.float64) + 0.5) / float(1 << 53)


def choose_tokens(
    logits: torch.Tensor, keys: torch.Tensor, step: int, temperature: float, top_p: float
) -> torch.Tensor:
    """Greedy at temperature 0; otherwise a draw from softmax(logits / T), truncated to the top-p mass."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest set reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    gumbel = -torch.log(-torch.log(uniform_noise(keys, step, logits.shape[-1])))
    return (scaled.double() + gumbel).argmax(dim=-1)  # Gumbel-max: an exact draw from the softmax


def supports(model: PreTrainedModel) -> bool:
    """Whether the model has the Llama layout this decoder runs (else use `model.generate`)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "rotary_emb") or getattr(model.config, "sliding_window", None):
        return False
    attention = layers[0].self_attn
    return all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")) and not hasattr(
        attention, "q_norm"
    )


class StaticCacheDecoder:
    """Runs a Llama-style causal LM step by step over a static KV cache."""

    def __init__(self, model: PreTrainedModel) -> None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        if not supports(model):
            raise ValueError(f"{type(model).__name__} does not have the Llama layout")
        self.model, self.inner = model, model.model
        self._rotate = apply_rotary_pos_emb
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.inner.layers[0].self_attn.scaling
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def _allocate(self, rows: int, length: int, like: torch.Tensor) -> None:
        shape = (rows, self.kv_heads, length, self.head_dim)
        self.keys = [like.new_zeros(shape) for _ in self.inner.layers]
        self.values = [like.new_zeros(shape) for _ in self.inner.layers]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def _grow(self) -> None:
        self.keys = [F.pad(cache, (0, 0, 0, GROW)) for cache in self.keys]
        self.values = [F.pad(cache, (0, 0, 0, GROW)) for cache in self.values]

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, start: int, mask: torch.Tensor) -> torch.Tensor:
        """Logits of the last position; writes the keys and values of `tokens` at cache slots start...

        `mask` is boolean [rows, 1, width, start + width] for a prompt (SDPA over the filled slots), or an
        additive float bias [rows, 1, 1, capacity] for one decoding step (attention over the whole cache).
        """
        rows, width = tokens.shape
        hidden = self.inner.embed_tokens(tokens)
        cos, sin = self.inner.rotary_emb(hidden, positions)
        end = start + width
        for index, layer in enumerate(self.inner.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attention.q_proj(x).view(rows, width, self.heads, self.head_dim).transpose(1, 2)
            k = attention.k_proj(x).view(rows, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attention.v_proj(x).view(rows, width, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self._rotate(q, k, cos, sin)
            self.keys[index][:, :, start:end] = k
            self.values[index][:, :, start:end] = v
            if width == 1:
                out = self._attend_one(q, self.keys[index], self.values[index], mask)
            else:
                keys, values = self.keys[index][:, :, :end], self.values[index][:, :, :end]
                out = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=mask, scale=self.scale, enable_gqa=self.kv_heads != self.heads
                )
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(rows, width, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.model.lm_head(self.inner.norm(hidden[:, -1]))

    def _attend_one(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """Attention of one query per row: query heads grouped onto their key-value head."""
        rows = q.shape[0]
        grouped = q.reshape(rows, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        scores = torch.matmul(grouped, keys.transpose(-1, -2)) * self.scale + bias
        out = torch.matmul(scores.softmax(dim=-1), values)
        return out.reshape(rows, self.heads, 1, self.head_dim)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        keys: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        eos_token_id: int,
        pad_token_id: int,
        stop: Callable[[int, int], bool] | None = None,
    ) -> list[list[int]]:
        """New tokens for each prompt (left-padded into one batch), up to EOS, `stop(row, token)` or the cap.

        `stop` is told each row's newest token and says whether the row is done (its token is kept).
        """
        device = self.model.device
        rows, longest = len(prompts), max(len(p) for p in prompts)
        tokens = torch.full((rows, longest), pad_token_id, dtype=torch.long, device=device)
        valid = torch.zeros((rows, longest + max_new_tokens + GROW), dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            tokens[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            valid[row, longest - len(prompt) : longest] = True
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        positions = (torch.arange(longest, device=device) - (longest - lengths)[:, None]).clamp(min=0)
        self._allocate(rows, longest, self.inner.embed_tokens.weight)
        slots = torch.arange(longest, device=device)
        causal = (slots[None, :] <= slots[:, None])[None] & valid[:, None, :longest]
        causal |= torch.eye(longest, dtype=torch.bool, device=device)[None]  # padding attends to itself: no NaN
        logits = self._forward(tokens, positions, 0, causal[:, None])

        row_keys = torch.tensor([_signed(key) for key in keys], dtype=torch.int64, device=device)
        active = list(range(rows))  # the original row of each batch row
        alive = [True] * rows
        outputs: list[list[int]] = [[] for _ in range(rows)]
        for step in range(max_new_tokens):
            chosen = choose_tokens(logits, row_keys, step, temperature, top_p).tolist()
            for batch_row, token in enumerate(chosen):
                if not alive[batch_row]:
                    continue
                row = active[batch_row]
                if token == eos_token_id:
                    alive[batch_row] = False
                    continue
                outputs[row].append(token)
                if stop is not None and stop(row, token):
                    alive[batch_row] = False
            running = [batch_row for batch_row, live in enumerate(alive) if live]
            if not running or step == max_new_tokens - 1:
                break
            if len(running) < COMPACT_BELOW * len(active):
                keep = torch.tensor(running, device=device)
                self.keys = [cache.index_select(0, keep) for cache in self.keys]
                self.values = [cache.index_select(0, keep) for cache in self.values]
                valid, lengths, row_keys = valid[keep], lengths[keep], row_keys[keep]
                chosen = [chosen[i] for i in running]
                active = [active[i] for i in running]
                alive = [True] * len(running)
            slot = longest + step
            if slot >= self.capacity:
                self._grow()
            valid[:, slot] = True
            step_tokens = torch.tensor(chosen, dtype=torch.long, device=device)[:, None]
            step_positions = (lengths + step)[:, None]
            bias = torch.zeros((len(active), self.capacity), dtype=logits.dtype, device=device)
            bias.masked_fill_(~valid[:, : self.capacity], float("-inf"))
            logits = self._forward(step_tokens, step_positions, slot, bias[:, None, None, :])
        return outputs
