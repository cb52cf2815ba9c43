"""`rftlab gsm8k`: GSM8K's train and test splits as problem files, from the hub or a local copy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import IO, Job, option


@dataclass(frozen=True, kw_only=True)
class Gsm8kJob(Job):
    """Writes OUT/train.jsonl and OUT/test.jsonl from `source`."""

    COMMAND = "gsm8k"
    HELP = "write GSM8K's train and test splits as problem files, from the hub or a local copy"
    DESCRIPTION = (
        "Write OUT/train.jsonl and OUT/test.jsonl (query, response; a problem's id is its 0-based line) from a hub "
        "dataset (needs `pip install 'rftlab[hub]'`), a folder of train.jsonl and test.jsonl (question/answer or "
        "query/response), or a local hub snapshot (CONFIG/train-*.parquet, CONFIG/test-*.parquet). Both splits are "
        "checked before anything is written; each file is written atomically."
    )
    LIBRARIES = ("datasets",)

    out: Path = option(help="output folder", kind=IO, metavar="DIR", writes="folder")
    source: str = option("openai/gsm8k", "hub dataset id or local folder")
    config: str = option("main", "dataset config, e.g. main or socratic")

    def inputs(self) -> list[tuple[str, Path]]:
        """A local source folder is an input (the hub's is none)."""
        return [("--source", Path(self.source))] if Path(self.source).exists() else []

    def run(self) -> dict[str, int]:
        from rftlab.gsm8k import load_gsm8k, write_gsm8k

        try:
            records = load_gsm8k(self.source, self.config)
        except (ImportError, OSError) as error:  # datasets missing, or the hub out of reach
            raise ChildProcessError(str(error)) from error
        return write_gsm8k(self.out, records)

    def message(self, result: dict[str, Any]) -> str:
        return "\n".join(f"{self.out / f'{split}.jsonl'}: {count:,} problems" for split, count in result.items())
