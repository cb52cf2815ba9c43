"""The whole RFT loop on the toy world, from nothing to a report: `rftlab demo`.

Stages (each writes its files under the output folder and is skipped or resumed when run again):
toy world -> pre-train a base -> SFT -> sample k paths per train question -> reject (correct, checked,
distinct) -> RFT (the *base* trained again on the original data plus the selected paths, paper §3.3)
-> evaluate SFT and RFT on the test set -> report.md with a table and a plot.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from rftlab.data import read_json, read_problems, write_json, write_jsonl

T = TypeVar("T")


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings; the defaults fit in about 15 minutes on 2 CPU cores."""

    seed: int = 0
    n_train: int = 4000
    n_test: int = 500
    preset: str = "m"
    pretrain_tokens: int = 3_000_000
    sft_tokens: int = 2_000_000
    k: int = 4
    temperature: float = 0.7
    eval_k: int = 4


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


def run_demo(out: Path, config: DemoConfig = DemoConfig(), *, quiet: bool = False) -> dict[str, Any]:
    """Runs (or resumes) every stage under `out`; writes `out/results.json`, `out/report.md` and a plot."""
    from rftlab.evaluate import evaluate_model
    from rftlab.reject import reject, statistics
    from rftlab.report import write_demo_report
    from rftlab.sample import SamplingSettings, run_sampling
    from rftlab.toyworld import write_toyworld
    from rftlab.train import pretrain, recipe_with, sft

    progress = False if quiet else None
    stages = Stages(quiet)
    data, base, tuned, rft_model = out / "data", out / "base", out / "sft", out / "rft"

    def make_world() -> dict[str, Any]:
        if (data / "toyworld.json").exists():
            return read_json(data / "toyworld.json")
        return write_toyworld(data, config.n_train, config.n_test, config.seed)

    def train_base() -> dict[str, Any]:
        recipe = recipe_with("toy-pretrain", tokens=config.pretrain_tokens)
        return pretrain(data / "pretrain.txt", base, preset=config.preset, recipe=recipe, seed=config.seed,
                        show_progress=progress)  # fmt: skip

    def fine_tune(model: Path, train_file: Path, tokens: int) -> dict[str, Any]:
        recipe = recipe_with("toy-sft", tokens=tokens)
        return sft(str(base), train_file, model, recipe=recipe, seed=config.seed, show_progress=progress)

    def sample_train_questions() -> dict[str, Any]:
        settings = SamplingSettings(k=config.k, temperature=config.temperature, seed=config.seed)
        return run_sampling(str(tuned), data / "train.jsonl", samples, settings, show_progress=progress)

    def select() -> dict[str, Any]:
        result = reject(read_problems(data / "train.jsonl"), [samples], show_progress=progress)
        write_jsonl(out / "rft.jsonl", result.records())
        stats = statistics(result)
        write_json(out / "reject-stats.json", stats)
        return stats

    def evaluate(model: Path, name: str) -> dict[str, Any]:
        return evaluate_model(str(model), data / "test.jsonl", out / "eval" / f"{name}.json", k=config.eval_k,
                              temperature=config.temperature, seed=config.seed, show_progress=progress)  # fmt: skip

    samples = out / "samples" / f"sft-k{config.k}.jsonl"
    samples.parent.mkdir(parents=True, exist_ok=True)
    world = stages.run("toy world", make_world)
    stages.run("pre-train the base", train_base)
    stages.run("SFT", lambda: fine_tune(tuned, data / "train.jsonl", config.sft_tokens))
    stages.run(f"sample k={config.k} on the train questions", sample_train_questions)
    selection = stages.run("reject", select)
    rft_examples = config.n_train + selection["selected"]
    rft_tokens = round(config.sft_tokens * rft_examples / config.n_train)  # as many epochs as SFT (paper §3.3)
    stages.run("RFT (from the base)", lambda: fine_tune(rft_model, out / "rft.jsonl", rft_tokens))
    evaluations = {name: stages.run(f"evaluate {name}", lambda m=m, name=name: evaluate(m, name))
                   for name, m in (("SFT", tuned), ("RFT", rft_model))}  # fmt: skip
    results = {
        "config": asdict(config),
        "world": world,
        "selection": selection,
        "rft_examples": rft_examples,
        "evaluations": evaluations,
        "seconds": stages.seconds,
    }
    write_json(out / "results.json", results)
    write_demo_report(out, results)
    return results
