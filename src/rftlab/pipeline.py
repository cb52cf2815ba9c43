"""The whole RFT loop on the toy world, from nothing to a report: `rftlab demo`.

Stages (each writes its files under the output folder and is skipped or resumed when run again):
toy world -> pre-train a base -> SFT -> sample k paths per train question -> reject (correct, checked,
distinct) -> RFT (the *base* trained again on the original data plus the selected paths, paper §3.3)
-> evaluate SFT and RFT on the test set -> report.md with a table and a plot.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rftlab.data import read_json, write_json
from rftlab.jobs.eval import EvalJob
from rftlab.jobs.pretrain import PretrainJob
from rftlab.jobs.reject import RejectJob
from rftlab.jobs.sample import SampleJob
from rftlab.jobs.sft import SftJob
from rftlab.jobs.world import WorldJob

T = TypeVar("T")
OUTPUTS = ("data", "base", "sft", "rft", "samples", "eval", "rft.jsonl", "reject-stats.json", "results.json",
           "report.md", "accuracy.png")  # fmt: skip
"""What the demo writes under its folder (and `--overwrite` removes)."""


class Stages:
    """Runs named stages in order, timing each and telling the user what is happening."""

    def __init__(self, quiet: bool) -> None:
        self.seconds: dict[str, float] = {}
        self.quiet = quiet

    def run(self, name: str, work: Callable[[], T]) -> T:
        if not self.quiet:
            print(f"[{len(self.seconds) + 1}] {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = work()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        return result


def run_demo(demo: Any) -> dict[str, Any]:
    """Runs (or resumes) every stage of a `DemoJob` under its folder; writes results.json, report.md and a plot.

    A folder that holds another demo's outputs (other settings) is refused, unless `demo.overwrite`."""
    from rftlab.report import write_demo_report

    out = demo.out
    if demo.overwrite:
        for name in OUTPUTS:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    data, samples = out / "data", out / "samples" / f"sft-k{demo.k}.jsonl"
    common = {"seed": demo.seed, "quiet": demo.quiet}
    world = WorldJob(out=data, n_train=demo.n_train, n_test=demo.n_test, seed=demo.seed)
    tuned, rft_model = out / "sft", out / "rft"

    def fine_tune(model: Path, train_file: Path, tokens: int) -> dict[str, Any]:
        return SftJob(model=str(out / "base"), data=train_file, out=model, recipe="toy-sft", tokens=tokens,
                      **common).run()  # fmt: skip

    def evaluate(model: Path, name: str) -> dict[str, Any]:
        return EvalJob(model=str(model), data=data / "test.jsonl", out=out / "eval" / f"{name}.json", k=demo.eval_k,
                       temperature=demo.temperature, **common).run()  # fmt: skip

    stages = Stages(demo.quiet)
    made = stages.run("toy world", lambda: _reuse_world(world) or world.run())
    stages.run("pre-train the base", PretrainJob(corpus=data / "pretrain.txt", out=out / "base", preset=demo.preset,
                                                 tokens=demo.pretrain_tokens, **common).run)  # fmt: skip
    stages.run("SFT", lambda: fine_tune(tuned, data / "train.jsonl", demo.sft_tokens))
    sample = SampleJob(model=str(tuned), data=data / "train.jsonl", out=samples, k=demo.k,
                       temperature=demo.temperature, **common)  # fmt: skip
    stages.run(f"sample k={demo.k} on the train questions", sample.run)
    select = RejectJob(samples=(samples,), train=data / "train.jsonl", out=out / "rft.jsonl",
                       stats=out / "reject-stats.json", quiet=demo.quiet)  # fmt: skip
    selection = {key: value for key, value in stages.run("reject", select.run).items() if key != "lines"}
    rft_examples = demo.n_train + selection["selected"]
    rft_tokens = round(demo.sft_tokens * rft_examples / demo.n_train)  # as many epochs as SFT (paper §3.3)
    stages.run("RFT (from the base)", lambda: fine_tune(rft_model, out / "rft.jsonl", rft_tokens))
    evaluations = {name: stages.run(f"evaluate {name}", lambda m=m, name=name: evaluate(m, name))
                   for name, m in (("SFT", tuned), ("RFT", rft_model))}  # fmt: skip
    results = {
        "config": demo.identity(),
        "world": made,
        "selection": selection,
        "rft_examples": rft_examples,
        "evaluations": evaluations,
        "seconds": stages.seconds,
    }
    write_json(out / "results.json", results)
    write_demo_report(out, results)
    return results


def _reuse_world(world: WorldJob) -> dict[str, Any] | None:
    """The summary of the world already in the folder when it was made with these settings; None when there is
    none; FileExistsError when it was made with others."""
    recorded = world.out / "toyworld.json"
    if not recorded.exists():
        return None
    summary = read_json(recorded)
    wanted = json.loads(json.dumps(world.recorded()))  # as JSON holds it: tuples as lists
    made = {key: summary.get(key) for key in wanted}
    if made != wanted:
        differences = ", ".join(
            f"{key} {made[key]!r}, not {wanted[key]!r}" for key in wanted if made[key] != wanted[key]
        )
        raise FileExistsError(f"{world.out} holds a toy world made with other settings ({differences}); pass "
                              "--overwrite to rebuild the demo, or use another --out")  # fmt: skip
    return {key: value for key, value in summary.items() if key != "config"}
