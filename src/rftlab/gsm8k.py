"""GSM8K in rftlab's problem format, from the hub or from a local copy (`rftlab gsm8k`).

Sources:

- a hub dataset id (default `openai/gsm8k`, config `main`), loaded with `datasets.load_dataset(source, config)`;
- a local folder of `train.jsonl` and `test.jsonl` (`query`/`response` or `question`/`answer`);
- a local hub-layout snapshot, `CONFIG/train-*.parquet` and `CONFIG/test-*.parquet` (openai/gsm8k's layout:
  `main/train-00000-of-00001.parquet`), read through datasets' own parquet loader.

A path that exists is local; anything else is a hub id. Both splits are read and checked (every problem
has a question and a `#### N` gold answer; DataError names the file and line, or parquet row) before
anything is written, and each output file is written atomically.

The output is the format of the GSM8K copy this project is tested on: one `{"query", "response"}` object a
line, as Python's `json.dumps` writes it (ASCII, `", "` and `": "`), so the same problems give byte-identical
files. There is no `id` field: a problem's id is its 0-based line index, which `read_problems` assigns.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from rftlab.data import DataError, atomic_writer, iter_jsonl, problem_fields

SPLITS = ("train", "test")
DEFAULT_SOURCE = "openai/gsm8k"
DEFAULT_CONFIG = "main"

Records = dict[str, list[dict[str, str]]]
"""Split name -> problems in order, each {"query", "response"}."""


def _datasets() -> ModuleType:
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "reading GSM8K from the hub or from parquet files needs the datasets package: pip install 'rftlab[hub]'"
        ) from error
    return datasets


def _problems(rows: Iterable[tuple[int, Mapping[str, Any]]], where: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The checked {"query", "response"} of numbered rows; DataError at the first bad one or when there is none."""
    problems = []
    for line, row in rows:
        query, response, _ = problem_fields(dict(row), where, line)
        problems.append({"query": query, "response": response})
    if not problems:
        raise DataError(where, None, "no problems")
    return problems


def _from_jsonl_folder(folder: Path) -> Records:
    records = {}
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(path, None, f"missing split {split!r} (expected {split}.jsonl beside the other)")
        records[split] = _problems(iter_jsonl(path), path)
    return records


def _from_parquet_snapshot(folder: Path, config: str) -> Records:
    files = {split: sorted((folder / config).glob(f"{split}-*.parquet")) for split in SPLITS}
    for split, found in files.items():
        if not found:
            raise DataError(folder / config, None, f"missing split {split!r} (no {split}-*.parquet)")
    datasets = _datasets()
    records = {}
    with tempfile.TemporaryDirectory(prefix="rftlab-gsm8k-") as cache:  # keeps a local copy out of the HF cache
        loaded = datasets.load_dataset(
            "parquet", data_files={split: [str(path) for path in found] for split, found in files.items()},
            cache_dir=cache,
        )  # fmt: skip
        for split, found in files.items():
            where = found[0] if len(found) == 1 else folder / config / f"{split}-*.parquet"
            records[split] = _problems(enumerate(loaded[split], start=1), where)  # line: the 1-based row
    return records


def _from_hub(source: str, config: str) -> Records:
    dataset = _datasets().load_dataset(source, config)
    records = {}
    for split in SPLITS:
        if split not in dataset:
            raise DataError(f"{source}[{config}]", None, f"missing split {split!r} (has {', '.join(dataset)})")
        records[split] = _problems(enumerate(dataset[split], start=1), f"{source}[{config}/{split}]")
    return records


def load_gsm8k(source: str | os.PathLike[str] = DEFAULT_SOURCE, config: str = DEFAULT_CONFIG) -> Records:
    """Both splits of GSM8K from a hub id or a local folder (see the module's description), checked."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataError(path, None, "not a folder (expected train.jsonl and test.jsonl, or a hub snapshot)")
        if any((path / f"{split}.jsonl").exists() for split in SPLITS):
            return _from_jsonl_folder(path)
        if (path / config).is_dir():
            return _from_parquet_snapshot(path, config)
        raise DataError(path, None, f"holds neither train.jsonl and test.jsonl nor {config}/train-*.parquet")
    text = str(source)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:  # a path, not a hub id (name or owner/name)
        raise DataError(path, None, "no such folder")
    return _from_hub(text, config)


def write_gsm8k(out: str | os.PathLike[str], records: Records) -> dict[str, int]:
    """Writes OUT/SPLIT.jsonl for each split (train and test; the demo's valid too), each atomically; returns
    the problems per split."""
    for split, problems in records.items():
        with atomic_writer(Path(out) / f"{split}.jsonl") as handle:
            handle.writelines((json.dumps(problem) + "\n").encode() for problem in problems)
    return {split: len(problems) for split, problems in records.items()}


def demo_splits(records: Records, n_train: int, n_valid: int, n_test: int, seed: int) -> Records:
    """The real-model demo's problems: `n_train` and `n_valid` disjoint problems drawn with `seed` from GSM8K's
    train split (each kept in file order), and the first `n_test` of its test split (0: all). Each problem gets
    an `id` that names its split and line (`train-17`, `test-3`), so subsets of one copy never collide."""
    train, test = records["train"], records["test"]
    if n_train < 1 or n_valid < 0 or n_test < 0 or n_train + n_valid > len(train) or n_test > len(test):
        raise ValueError(f"GSM8K has {len(train):,} train and {len(test):,} test problems: cannot take "
                         f"{n_train:,} + {n_valid:,} from train and {n_test:,} from test")  # fmt: skip
    drawn = random.Random(seed).sample(range(len(train)), n_train + n_valid)
    chosen = {"train": sorted(drawn[:n_train]), "valid": sorted(drawn[n_train:])}
    labelled = {name: [{"id": f"train-{i}", **train[i]} for i in lines] for name, lines in chosen.items()}
    return {**labelled, "test": [{"id": f"test-{i}", **test[i]} for i in range(n_test or len(test))]}
