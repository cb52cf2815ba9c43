"""Shared fixtures: small JSONL helpers and the GSM8K copy in ../shared (skipped where absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

GSM8K_DIR = Path(
    os.environ.get("RFTLAB_GSM8K_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
)


def write_lines(path: Path, records: list[dict | str]) -> Path:
    """Writes records (dicts as JSON, strings as they are) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


CHAT = (
    "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[a] {% endif %}"
)
"""A minimal chat template for tiny checkpoints (the real models' templates need special tokens)."""


def save_tiny_checkpoint(folder: Path, seed: int, chat_template: str | None = None) -> Path:
    """A freshly initialised `tiny` toy model and its tokenizer, saved as an ordinary checkpoint folder."""
    from rftlab.models import char_tokenizer, new_toy_model

    tokenizer = char_tokenizer()
    tokenizer.chat_template = chat_template
    new_toy_model("tiny", tokenizer, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    if not (GSM8K_DIR / "train.jsonl").exists():
        pytest.skip(f"GSM8K not found at {GSM8K_DIR} (the shared data folder beside the checkout)")
    return GSM8K_DIR
