"""Keyed draws of the next token: a path is a function of its row key and its logits, whatever the batch.

Each row draws one uniform number per step from a counter-based hash of (row key, step) and takes the token
where that number falls in the cumulative distribution of softmax(logits / T), truncated to the top-p mass:
an exact draw (inverse transform sampling) that needs no noise over the vocabulary. Every operation works row
by row, so a row's token does not depend on the other rows of its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
BLOCK = 256
"""Tokens per block of the two-level search: the cumulative sum runs over block totals, then one block."""


def signed(value: int) -> int:
    """A 64-bit unsigned value as the int64 that has its bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (wrapping arithmetic): a counter-based hash."""
    x = x + signed(_GOLDEN)
    x = (x ^ _shift_right(x, 30)) * signed(_MIX1)
    x = (x ^ _shift_right(x, 27)) * signed(_MIX2)
    return x ^ _shift_right(x, 31)


def row_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform (0, 1) float64 number per row, a pure function of (row key, step): 53 random bits."""
    bits = _shift_right(splitmix64(splitmix64(keys) + step), 11)
    return (bits.to(torch.float64) + 0.5) / float(1 << 53)


def _last_positive(weights: torch.Tensor) -> torch.Tensor:
    """Index of the last positive entry of each row (0 for a row with none)."""
    width = weights.shape[-1]
    return width - 1 - (weights > 0).flip(-1).to(torch.uint8).argmax(dim=-1)


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """For each row of non-negative `weights` [rows, n] (some positive), the index i where `uniform` x total
    falls in the cumulative sums: index i with probability weights[i] / total. Blocks of BLOCK entries are
    summed in the weights' precision, their running totals in float64, then the chosen block's entries in
    float64; never an index of weight 0."""
    rows, width = weights.shape
    blocks = -(-width // BLOCK)
    padded = weights if width == blocks * BLOCK else F.pad(weights, (0, blocks * BLOCK - width))
    grid = padded.view(rows, blocks, BLOCK)
    block_totals = grid.sum(dim=-1).double()  # summing in float64 would copy the whole vocabulary to it
    running = block_totals.cumsum(dim=-1)
    target = uniforms * running[:, -1]
    block = torch.searchsorted(running, target[:, None], right=True)[:, 0]
    block = torch.minimum(block, _last_positive(block_totals))  # rounding at the very top of the range
    before = torch.where(block > 0, running.gather(1, (block - 1).clamp(min=0)[:, None])[:, 0], 0.0)
    inside = grid[torch.arange(rows, device=weights.device), block]
    offset = torch.searchsorted(inside.double().cumsum(dim=-1), (target - before)[:, None], right=True)[:, 0]
    return block * BLOCK + torch.minimum(offset, _last_positive(inside))


def choose_tokens(
    logits: torch.Tensor, keys: torch.Tensor, step: int, temperature: float, top_p: float
) -> torch.Tensor:
    """Greedy at temperature 0; otherwise a draw from softmax(logits / T), truncated to the smallest set of
    most likely tokens whose mass reaches top_p."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    uniforms = row_uniforms(keys, step)
    if top_p >= 1.0:
        return inverse_cdf(torch.softmax(scaled, dim=-1), uniforms)
    ordered, order = scaled.sort(dim=-1, descending=True, stable=True)
    weights = (ordered - ordered[:, :1]).exp_()
    mass = weights / weights.sum(dim=-1, keepdim=True)
    weights[mass.cumsum(dim=-1) - mass >= top_p] = 0.0  # keep the smallest set reaching top_p
    return order.gather(1, inverse_cdf(weights, uniforms)[:, None])[:, 0]
