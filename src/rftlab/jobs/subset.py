"""A seeded random subset of a problem file (the study's data fractions): a job with no command of its own."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rftlab.jobs.base import IO, Job, option


@dataclass(frozen=True, kw_only=True)
class SubsetJob(Job):
    """A `fraction` of the problems of `data`, drawn with `seed`, kept in file order, with every field."""

    data: Path = option(help="problems", kind=IO)
    out: Path = option(help="the subset", kind=IO, writes="file")
    fraction: float = option(help="share of the problems, in (0, 1]")
    seed: int = option(0, "seed of the draw")

    def run(self) -> int:
        from rftlab.data import read_problems, write_jsonl

        read_problems(self.data)  # checks the file, with file:line errors
        with self.data.open(encoding="utf-8") as lines:
            problems = [json.loads(line) for line in lines if line.strip()]
        size = max(1, round(len(problems) * self.fraction))
        chosen = sorted(random.Random(self.seed).sample(range(len(problems)), size))
        return write_jsonl(self.out, (problems[i] for i in chosen))
