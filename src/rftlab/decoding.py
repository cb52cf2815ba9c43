"""Batched decoding with keyed draws (`rftlab.draws`), for any Hugging Face causal LM.

Each step's token of a row is drawn from a counter-based hash of (row key, step), so a row's path depends
only on its key and its logits: the same (seed, problem, sample index) gives the same path whatever else is
in the batch, and the k rows of a problem are independent draws. A row's logits are computed from its own
tokens only, but matrix products of other shapes can round them differently in the last bits, which changes
a draw only where its number falls that close to a boundary (the tests' paths alone and in batches of
other prompts are identical). Two loops apply it:

- `StaticCacheDecoder`: a tight loop over a Llama-style model's own modules and its own KV cache. It runs
  only what `exact_decoder` admits: an allow-listed architecture whose logits match the model's own
  forward on a small batch (other models can look alike and compute something else: Granite's multipliers).
- `generate_with_keys`: `model.generate` with the same keyed choice, for every other architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from rftlab.draws import choose_tokens, signed

if TYPE_CHECKING:
    from transformers import PreTrainedModel

COMPACT_BELOW = 0.75
"""Finished rows leave the batch once fewer than this share of its rows are still running."""
PREFILL_TOKENS = 4096
"""Most tokens (padding included) in one prefill batch."""


EXACT_ARCHITECTURES = ("llama", "mistral", "qwen2", "smollm3")
"""`model_type`s whose forward pass the static-cache loop computes (no sliding window that binds)."""
_ATTENTION_KINDS = ("full_attention", "sliding_attention")
_TOLERANCE = {torch.float64: 1e-4, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}
"""Largest logit difference the check accepts, relative to the largest logit (a random 135M-parameter
Llama, 30 layers: 8e-7 in float32, 2e-3 in float16, 2e-2 in bfloat16)."""
_CHECK_LENGTHS = (5, 2, 7, 5)  # the check's prompts (the last is the first's); then _CHECK_STEPS tokens
_CHECK_STEPS = 3


def _layout_problem(model: PreTrainedModel) -> str | None:
    """Why the model lacks the module layout the decoder runs, or None."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "rotary_emb") or not hasattr(model, "lm_head"):
        return "no model.layers, model.rotary_emb and lm_head"
    attention = layers[0].self_attn
    if not all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return "no self_attn.{q,k,v,o}_proj"
    return "query/key norms" if hasattr(attention, "q_norm") else None


def _config_problem(config: Any) -> str | None:
    """Why the configuration is outside what the decoder computes exactly, or None."""
    kind = getattr(config, "model_type", None)
    if kind not in EXACT_ARCHITECTURES:
        return f"{kind} is not on the fast decoder's allow-list"
    if any(layer not in _ATTENTION_KINDS for layer in getattr(config, "layer_types", None) or ()):
        return f"{kind} has attention layers of kinds other than {'/'.join(_ATTENTION_KINDS)}"
    window, context = getattr(config, "sliding_window", None), getattr(config, "max_position_embeddings", None)
    if window is None or getattr(config, "use_sliding_window", True) is False:
        return None
    if context is None or window < context:
        return f"{kind}'s sliding window ({window}) is shorter than its context ({context})"
    return None


def exact_decoder(model: PreTrainedModel) -> tuple[StaticCacheDecoder | None, str]:
    """The static-cache decoder if it computes this model's logits, else None; and a one-line reason.

    Checks the allow-list and module layout, then runs the decoder (prefill, cache growth, compaction and a
    few steps) on a small fixed batch and compares its logits to the model's own forward pass. Uses no random
    numbers; the decoder keeps no state from it.
    """
    kind = getattr(model.config, "model_type", None)
    problem = _config_problem(model.config) or _layout_problem(model)
    if problem is not None:
        return None, f"generate: {problem}"
    training = model.training
    try:
        model.eval()
        decoder = StaticCacheDecoder(model)
        error = _logits_error(decoder, model)
    except Exception as failure:  # any failure of the fast path leaves the general one
        return None, f"generate: the static-cache decoder failed on {kind} ({type(failure).__name__}: {failure})"
    finally:
        model.train(training)
    tolerance = _TOLERANCE.get(model.get_input_embeddings().weight.dtype, _TOLERANCE[torch.bfloat16])
    if not error <= tolerance:
        return None, f"generate: {kind}'s logits from the static-cache decoder are off by {error:.1g} (> {tolerance:g})"
    return decoder, f"static-cache ({kind}, logits match to {error:.1g})"


@torch.inference_mode()
def _logits_error(decoder: StaticCacheDecoder, model: PreTrainedModel) -> float:
    """Largest difference between the decoder's and the model's logits, relative to the largest logit.

    Four prompts, teacher-forced for a few steps: two rows share a prompt (and continue differently), two
    rows stop after the first step, so the batch compacts and a prompt group leaves it; the generated
    cache grows.
    """
    vocab = model.get_input_embeddings().num_embeddings
    width = max(_CHECK_LENGTHS) + _CHECK_STEPS
    rows = [[(7919 * (row + 1) * (i + 3) + 17 * i) % vocab for i in range(length + _CHECK_STEPS)] for row, length in
            enumerate(_CHECK_LENGTHS)]  # fmt: skip
    rows[-1][: _CHECK_LENGTHS[-1]] = rows[0][: _CHECK_LENGTHS[0]]
    ours: dict[tuple[int, int], torch.Tensor] = {}

    def feed(logits: torch.Tensor, row_keys: torch.Tensor, step: int) -> torch.Tensor:
        for batch_row, row in enumerate(row_keys.tolist()):
            ours[row, step] = logits[batch_row]
        return torch.tensor([rows[row][_CHECK_LENGTHS[row] + step] for row in row_keys.tolist()])

    prompts = [tokens[:length] for tokens, length in zip(rows, _CHECK_LENGTHS, strict=True)]
    decoder._run(prompts, range(len(rows)), feed, max_new_tokens=_CHECK_STEPS, eos_token_id=-1,
                 stop=lambda row, token: row < 2)  # fmt: skip
    device = model.device
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    theirs = torch.stack([logits[row, width - _CHECK_STEPS - 1 + step] for row, step in ours]).float()
    difference = (torch.stack(list(ours.values())).float() - theirs).abs().max()
    return (difference / theirs.abs().max().clamp(min=1e-6)).item()


@dataclass
class _Caches:
    """The keys and values of one batch, per layer: each distinct prompt's once, for the group of rows that
    share it (right-padded to the longest), and each row's generated ones (slot j: its j-th new token)."""

    prompt_keys: list[torch.Tensor]
    """[groups, kv heads, longest prompt, head dim]"""
    prompt_values: list[torch.Tensor]
    prompt_bias: torch.Tensor
    """[groups, 1, 1, longest prompt]: 0 over a prompt's tokens, -inf over the padding after them."""
    keys: list[torch.Tensor]
    """[rows, kv heads, capacity, head dim]"""
    values: list[torch.Tensor]
    group: torch.Tensor
    """[rows]: each row's group."""
    place: torch.Tensor
    """[rows]: each row's place among its group's rows (< places)."""
    places: int
    in_order: bool = field(init=False, default=False)
    """Set from the rows: see `_check_order`."""

    def __post_init__(self) -> None:
        self._check_order()

    def _check_order(self) -> None:
        """Whether row r is place r % places of group r // places (the rows as the backend gives them):
        then rows and groups are views of each other, without gathering."""
        groups = self.prompt_bias.shape[0]
        self.in_order = len(self.group) == groups * self.places and bool(
            (self.group * self.places + self.place == torch.arange(len(self.group), device=self.group.device)).all()
        )

    def to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """[rows, kv, per_kv, n] -> [groups, kv, places x per_kv, n]: each group's rows side by side (absent
        places zero)."""
        _, kv, per_kv, n = x.shape
        groups = self.prompt_bias.shape[0]
        if self.in_order:
            grouped = x.view(groups, self.places, kv, per_kv, n)
        else:
            grouped = x.new_zeros((groups, self.places, kv, per_kv, n))
            grouped[self.group, self.place] = x
        return grouped.transpose(1, 2).reshape(groups, kv, self.places * per_kv, n)

    def to_rows(self, y: torch.Tensor) -> torch.Tensor:
        """[groups, kv, places x per_kv, n] -> [rows, kv, per_kv, n], the inverse of `to_groups`."""
        groups, kv, _, n = y.shape
        by_place = y.view(groups, kv, self.places, -1, n).transpose(1, 2)
        if self.in_order:
            return by_place.reshape(len(self.group), kv, -1, n)
        return by_place[self.group, self.place]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def grow(self) -> None:
        """Doubles the slots for generated tokens."""
        self.keys = [F.pad(cache, (0, 0, 0, self.capacity)) for cache in self.keys]
        self.values = [F.pad(cache, (0, 0, 0, self.capacity)) for cache in self.values]

    def keep(self, rows: torch.Tensor) -> None:
        """Keeps these rows (and the groups they are in), dropping the rest."""
        self.keys = [cache.index_select(0, rows) for cache in self.keys]
        self.values = [cache.index_select(0, rows) for cache in self.values]
        self.group, self.place = self.group[rows], self.place[rows]
        groups, self.group = torch.unique(self.group, return_inverse=True)
        if len(groups) < self.prompt_bias.shape[0]:
            self.prompt_keys = [cache.index_select(0, groups) for cache in self.prompt_keys]
            self.prompt_values = [cache.index_select(0, groups) for cache in self.prompt_values]
            self.prompt_bias = self.prompt_bias.index_select(0, groups)
        self._check_order()


def _softmax_part(scores: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """exp(scores - m) @ values, m (the scores' maximum) and the sum of exp(scores - m); overwrites `scores`."""
    top = scores.amax(dim=-1, keepdim=True)
    weights = scores.sub_(top).exp_()
    return torch.matmul(weights, values), top, weights.sum(dim=-1, keepdim=True)


def _prefill_batches(lengths: Sequence[int]) -> list[list[int]]:
    """The prompts (by number) in batches for prefill: by length, each batch at most PREFILL_TOKENS tokens
    wide x long (one prompt at least), so that padding stays small."""
    batches: list[list[int]] = []
    for number in sorted(range(len(lengths)), key=lengths.__getitem__):
        if not batches or (len(batches[-1]) + 1) * lengths[number] > PREFILL_TOKENS:
            batches.append([])
        batches[-1].append(number)
    return batches


class StaticCacheDecoder:
    """Runs a Llama-style causal LM step by step over its own KV cache (where `exact_decoder` says it is exact).

    Each distinct prompt runs once (prefill in right-padded batches of similar lengths); its keys and values
    are kept once for all the rows that share it (the k paths of a question). A step's attention reads a
    group's prompt once for all its rows, each row's generated tokens, and merges the two softmax parts
    (cascade attention).
    """

    def __init__(self, model: PreTrainedModel) -> None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        problem = _layout_problem(model)
        if problem is not None:
            raise ValueError(f"{type(model).__name__} does not have the Llama layout: {problem}")
        self.model, self.inner = model, model.model
        self._rotate = apply_rotary_pos_emb
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.inner.layers[0].self_attn.scaling

    def _forward(
        self, tokens: torch.Tensor, positions: torch.Tensor,
        attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Logits of each row's position `last` (default: the final one); `attend(layer, q, k, v)` keeps the keys
        and values and gives the attention output [rows, heads, width, head dim]."""
        rows, width = tokens.shape
        hidden = self.inner.embed_tokens(tokens)
        cos, sin = self.inner.rotary_emb(hidden, positions)
        for index, layer in enumerate(self.inner.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attention.q_proj(x).view(rows, width, self.heads, self.head_dim).transpose(1, 2)
            k = attention.k_proj(x).view(rows, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attention.v_proj(x).view(rows, width, self.kv_heads, self.head_dim).transpose(1, 2)
            if getattr(attention, "use_rope", True):  # SmolLM3 leaves RoPE out of some layers
                q, k = self._rotate(q, k, cos, sin)
            out = attend(index, q, k, v)
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(rows, width, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        ends = hidden[:, -1] if last is None else hidden[torch.arange(rows, device=hidden.device), last]
        return self.model.lm_head(self.inner.norm(ends))

    def _prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[_Caches, torch.Tensor]:
        """Runs each distinct prompt once (causal attention; batches of similar lengths, right-padded, so no
        real token sees a pad); the batch's caches and the logits of each row's last prompt token."""
        device, like = self.model.device, self.inner.embed_tokens.weight
        distinct: dict[tuple[int, ...], int] = {}
        group = [distinct.setdefault(tuple(prompt), len(distinct)) for prompt in prompts]
        if not all(distinct):
            raise ValueError("an empty prompt (the decoder needs at least one token, e.g. BOS)")
        unique, layers = list(distinct), len(self.inner.layers)
        sizes = [len(prompt) for prompt in unique]
        lengths = torch.tensor(sizes, device=device)
        shape = (len(unique), self.kv_heads, max(sizes), self.head_dim)
        prompt_keys = [like.new_zeros(shape) for _ in range(layers)]
        prompt_values = [like.new_zeros(shape) for _ in range(layers)]
        padding = torch.arange(shape[2], device=device) >= lengths[:, None]
        bias = like.new_zeros((len(unique), 1, 1, shape[2])).masked_fill_(padding[:, None, None], float("-inf"))
        last_logits = like.new_empty((len(unique), self.model.lm_head.out_features))
        for batch in _prefill_batches(sizes):
            width = sizes[batch[-1]]
            ids = torch.tensor([[*unique[n], *[0] * (width - sizes[n])] for n in batch], device=device)
            numbers = torch.tensor(batch, device=device)
            attend = partial(self._attend_prompt, prompt_keys, prompt_values, numbers)
            positions = torch.arange(width, device=device).expand(len(batch), width)
            last_logits[numbers] = self._forward(ids, positions, attend, last=lengths[numbers] - 1)
        groups = torch.tensor(group, device=device)
        counts: dict[int, int] = {}
        place = []
        for number in group:
            place.append(counts.get(number, 0))
            counts[number] = place[-1] + 1
        generated = (len(prompts), self.kv_heads, 1, self.head_dim)
        caches = _Caches(prompt_keys, prompt_values, bias, [like.new_zeros(generated) for _ in range(layers)],
                         [like.new_zeros(generated) for _ in range(layers)], groups,
                         torch.tensor(place, device=device), max(counts.values()))  # fmt: skip
        return caches, last_logits[groups]

    def _attend_prompt(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], numbers: torch.Tensor,
        index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """Causal attention over a batch of right-padded prompts, whose keys and values go to the slots of
        their groups (`numbers`)."""
        width = k.shape[2]
        keys[index][numbers, :, :width] = k
        values[index][numbers, :, :width] = v
        gqa = self.kv_heads != self.heads
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=gqa)

    def _attend_step(self, caches: _Caches, index: int, q: torch.Tensor, filled: int) -> torch.Tensor:
        """One query per row over its group's prompt and its own `filled` generated slots: the softmax of each
        part apart (its maximum and sum kept), then the two merged into one."""
        rows = q.shape[0]
        query = (q * self.scale).reshape(rows, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
        on_prompt = torch.matmul(caches.to_groups(query), caches.prompt_keys[index].transpose(-1, -2))
        prompt = _softmax_part(on_prompt.add_(caches.prompt_bias), caches.prompt_values[index])
        from_prompt, top_prompt, sum_prompt = map(caches.to_rows, prompt)
        on_generated = torch.matmul(query, caches.keys[index][:, :, :filled].transpose(-1, -2))
        from_generated, top_generated, sum_generated = _softmax_part(on_generated, caches.values[index][:, :, :filled])
        top = torch.maximum(top_prompt, top_generated)
        prompt_share, generated_share = (top_prompt - top).exp_(), (top_generated - top).exp_()
        out = (from_prompt * prompt_share + from_generated * generated_share) / (
            sum_prompt * prompt_share + sum_generated * generated_share
        )
        return out.reshape(rows, self.heads, 1, self.head_dim)

    def _step(self, caches: _Caches, tokens: torch.Tensor, positions: torch.Tensor, slot: int) -> torch.Tensor:
        """Logits after one new token per row, whose keys and values go to generated slot `slot`."""
        if slot >= caches.capacity:
            caches.grow()

        def attend(index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            caches.keys[index][:, :, slot] = k[:, :, 0]
            caches.values[index][:, :, slot] = v[:, :, 0]
            return self._attend_step(caches, index, q, slot + 1)

        return self._forward(tokens[:, None], positions[:, None], attend)

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
        """New tokens for each prompt, up to EOS, `stop(row, token)` or the cap.

        `stop` is told each row's newest token and says whether the row is done (its token is kept). The
        arguments are `generate_with_keys`'s, so the two are interchangeable; this loop pads a prompt only after
        its end, where causal attention keeps its tokens from looking, so `pad_token_id` goes unused.
        """

        def pick(logits: torch.Tensor, row_keys: torch.Tensor, step: int) -> torch.Tensor:
            return choose_tokens(logits, row_keys, step, temperature, top_p)

        return self._run(prompts, keys, pick, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, stop=stop)

    @torch.inference_mode()
    def _run(
        self,
        prompts: Sequence[Sequence[int]],
        keys: Sequence[int],
        pick: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
        *,
        max_new_tokens: int,
        eos_token_id: int,
        stop: Callable[[int, int], bool] | None,
    ) -> list[list[int]]:
        """`generate` with `pick(logits, row_keys, step)` choosing each step's tokens (the batch's rows)."""
        device = self.model.device
        caches, logits = self._prefill(prompts)
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        row_keys = torch.tensor([signed(key) for key in keys], dtype=torch.int64, device=device)
        active = list(range(len(prompts)))  # the original row of each batch row
        alive = [True] * len(prompts)
        outputs: list[list[int]] = [[] for _ in prompts]
        for step in range(max_new_tokens):
            chosen = pick(logits, row_keys, step).tolist()
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
                caches.keep(keep)
                lengths, row_keys = lengths[keep], row_keys[keep]
                chosen = [chosen[i] for i in running]
                active = [active[i] for i in running]
                alive = [True] * len(running)
            step_tokens = torch.tensor(chosen, dtype=torch.long, device=device)
            logits = self._step(caches, step_tokens, lengths + step, step)
        return outputs


def generate_with_keys(
    model: PreTrainedModel,
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
    """`StaticCacheDecoder.generate` for any causal LM: `model.generate` with the same keyed choice of tokens.

    A logits processor picks each row's token with `choose_tokens` (the row's key, step = tokens generated so
    far) and greedy search takes it; the model's own generation config (repetition penalty, suppressed
    tokens, ...) is left out, as the static decoder leaves it out. A path is thus a function of its key and
    its logits, as there; but `model.generate` computes a row's logits in a padded batch, and another batch
    shape can change them in the last bits (and so, rarely, a draw near a tie).
    """
    from transformers import (
        GenerationConfig,
        LogitsProcessor,
        LogitsProcessorList,
        StoppingCriteria,
        StoppingCriteriaList,
    )

    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    device = model.device
    rows, longest = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((rows, longest), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros((rows, longest), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, longest - len(prompt) :] = 1
    row_keys = torch.tensor([signed(key) for key in keys], dtype=torch.int64, device=device)
    outputs: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows

    class KeyedChoice(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            chosen = choose_tokens(scores, row_keys, input_ids.shape[1] - longest, temperature, top_p)
            return torch.full_like(scores, float("-inf")).scatter_(1, chosen[:, None], 0.0)

    class RowsDone(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if done[row]:
                    continue
                if token == eos_token_id:
                    done[row] = True
                    continue
                outputs[row].append(token)
                done[row] = stop is not None and stop(row, token)
            return torch.tensor(done, device=input_ids.device)

    settings = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                eos_token_id=eos_token_id, pad_token_id=pad_token_id)  # fmt: skip
    own, model.generation_config = model.generation_config, GenerationConfig()
    try:
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, generation_config=settings,
                           logits_processor=LogitsProcessorList([KeyedChoice()]),
                           stopping_criteria=StoppingCriteriaList([RowsDone()]))  # fmt: skip
    finally:
        model.generation_config = own
    return outputs
