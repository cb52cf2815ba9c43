"""The whole RFT loop, from nothing to a report: `rftlab demo`.

Stages (each writes its files under the output folder and is skipped or resumed when run again):
data (a toy world, or GSM8K subsets for a real preset; train, validation, test) -> a base (pre-trained on
the toy corpus, or the real model as it is) -> SFT -> sample k paths per train question -> reject (correct,
checked, distinct) -> RFT (the *base* trained again on the original data plus the selected paths, the same
epochs, paper §3.3) -> the compute-matched controls (SFT for RFT's tokens, RFT for SFT's) -> evaluate the
four on the test set -> results.json, report.md and plots. Every model is the best checkpoint on the
validation split within its budget (`rftlab.validation`); `rftlab.compare` gives the intervals.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rftlab.compare import MODELS
from rftlab.data import read_json, write_json
from rftlab.jobs.eval import EvalJob
from rftlab.jobs.pretrain import PretrainJob
from rftlab.jobs.reject import RejectJob
from rftlab.jobs.sample import SampleJob
from rftlab.jobs.sft import SftJob
from rftlab.jobs.world import WorldJob
from rftlab.smollm2 import cached_gguf

T = TypeVar("T")
FOLDERS = {name: name.replace("_", "-") for name in MODELS}
"""Each model's checkpoint folder under the demo's."""
OUTPUTS = ("data", *FOLDERS.values(), "samples", "eval", "rft.jsonl", "reject-stats.json", "results.json",
           "report.md", "accuracy.png", "validation.png")  # fmt: skip
"""What every demo writes under its folder (and `--overwrite` removes); a toy preset's also `base`."""


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
    """Runs (or resumes) every stage of a `DemoJob` under its folder; writes results.json, report.md and plots.

    A folder that holds another demo's outputs (other settings) is refused, unless `demo.overwrite`."""
    from rftlab.compare import compare, greedy_outcomes
    from rftlab.evaluate import predictions_path
    from rftlab.report import write_demo_report

    out = demo.out
    if demo.overwrite:
        for name in OUTPUTS if demo.real() else (*OUTPUTS, "base"):  # a real preset's base is given, not written
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    data, samples = out / "data", out / "samples" / f"sft-k{demo.k}.jsonl"
    common = {"seed": demo.seed, "quiet": demo.quiet}
    gold, paths = data / "train.jsonl", out / "rft.jsonl"

    def fine_tune(name: str, train_file: Path, **budget: Any) -> dict[str, Any]:
        return SftJob(model=base, data=train_file, out=out / FOLDERS[name], recipe=demo.recipe(),
                      validation=data / "valid.jsonl", select=demo.select, eval_count=demo.eval_count, **budget,
                      **common).execute()  # fmt: skip

    def evaluate(name: str) -> dict[str, Any]:
        return EvalJob(model=str(out / FOLDERS[name]), data=data / "test.jsonl", out=out / "eval" / f"{name}.json",
                       k=demo.eval_k or None, temperature=demo.temperature, **common).execute()  # fmt: skip

    stages = Stages(demo.quiet)
    if demo.real():
        made = stages.run("GSM8K subsets", lambda: _gsm8k_subsets(demo, data))
        base = stages.run("the base model", lambda: demo.model or str(cached_gguf()))
    else:
        world = WorldJob(out=data, n_train=demo.n_train, n_valid=demo.n_valid, n_test=demo.n_test, seed=demo.seed,
                         corpus_solved=demo.corpus_solved)  # fmt: skip
        made = stages.run("toy world", lambda: _reuse(world.out / "toyworld.json", world.recorded()) or world.execute())
        base = str(out / "base")
        stages.run("pre-train the base", PretrainJob(corpus=data / "pretrain.txt", out=out / "base",
                                                     preset=demo.preset, tokens=demo.pretrain_tokens,
                                                     **common).execute)  # fmt: skip
    trained = {"sft": stages.run("SFT", lambda: fine_tune("sft", gold, epochs=demo.epochs))}
    sample = SampleJob(model=str(out / "sft"), data=gold, out=samples, k=demo.k, temperature=demo.temperature,
                       **common)  # fmt: skip
    stages.run(f"sample k={demo.k} on the train questions", sample.execute)
    select = RejectJob(samples=(samples,), train=gold, out=paths, stats=out / "reject-stats.json",
                       quiet=demo.quiet)  # fmt: skip
    selection = {key: value for key, value in stages.run("reject", select.execute).items() if key != "lines"}
    trained["rft"] = stages.run("RFT (from the base)", lambda: fine_tune("rft", paths, epochs=demo.epochs))
    trained["sft_at_rft_tokens"] = stages.run("SFT for RFT's tokens", lambda: fine_tune(
        "sft_at_rft_tokens", gold, tokens=trained["rft"]["tokens_seen"]))  # fmt: skip
    trained["rft_at_sft_tokens"] = stages.run("RFT for SFT's tokens", lambda: fine_tune(
        "rft_at_sft_tokens", paths, tokens=trained["sft"]["tokens_seen"]))  # fmt: skip
    evaluations = {name: stages.run(f"evaluate {name}", lambda name=name: evaluate(name)) for name in FOLDERS}
    outcomes = {name: [greedy_outcomes(predictions_path(out / "eval" / f"{name}.json"))] for name in FOLDERS}
    compared = compare(outcomes, seed=demo.seed)
    results = {
        "format": RESULTS_FORMAT,
        "config": demo.identity(),
        "world": made,
        "selection": selection,
        "test_problems": len(outcomes["sft"][0]),
        **{name: _model_entry(compared["models"][name], evaluations[name], trained[name]) for name in FOLDERS},
        "contrasts": compared["contrasts"],
        "verdict": compared["verdict"],
        "seconds": stages.seconds,
    }
    write_json(out / "results.json", results)
    write_demo_report(out, results)
    return results


RESULTS_FORMAT = "rftlab.demo-results/3"


def _model_entry(scores: dict[str, Any], evaluation: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """One model in results.json: maj1@1 with its interval, maj1@k and pass@k, and how it was trained."""
    kept = training["validation"]["best"]
    return {
        **scores,
        **{key: evaluation[key] for key in ("maj1@k", "pass@k") if key in evaluation},
        "examples": training["examples"],
        "tokens_seen": training["tokens_seen"],
        "epochs": training["validation"]["curve"][-1]["epoch"],  # the last step is always measured
        "kept": kept,
        "validation_metric": training["validation"]["metric"],
        "validation_curve": training["validation"]["curve"],
    }


def _reuse(recorded: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The summary in `recorded` (a toy world's, the GSM8K subsets') when it was made with the `wanted`
    settings, less its config; None when there is none; FileExistsError when it was made with others."""
    if not recorded.exists():
        return None
    summary = read_json(recorded)
    wanted = json.loads(json.dumps(wanted))  # as JSON holds it: tuples as lists
    made = {key: summary.get(key) for key in wanted}
    if made != wanted:
        differences = ", ".join(
            f"{key} {made[key]!r}, not {wanted[key]!r}" for key in wanted if made[key] != wanted[key]
        )
        raise FileExistsError(f"{recorded.parent} holds data made with other settings ({differences}); pass "
                              "--overwrite to rebuild the demo, or use another --out")  # fmt: skip
    return {key: value for key, value in summary.items() if key != "config"}


def _gsm8k_subsets(demo: Any, data: Path) -> dict[str, Any]:
    """The demo's GSM8K train, validation and test problems in `data` (`gsm8k.demo_splits`), with a record of
    how they were drawn (gsm8k.json: source, seed, sizes, the source files' SHA-256) that a rerun checks."""
    from rftlab.gsm8k import demo_splits, load_gsm8k, write_gsm8k

    records = load_gsm8k(demo.gsm8k)
    wanted = {"source": demo.gsm8k, "seed": demo.seed, "sizes": [demo.n_train, demo.n_valid, demo.n_test],
              "sha256": {split: _digest(problems) for split, problems in records.items()}}  # fmt: skip
    made = _reuse(data / "gsm8k.json", wanted)
    if made is not None:
        return made
    splits = demo_splits(records, demo.n_train, demo.n_valid, demo.n_test, demo.seed)
    summary = {**wanted, "problems": write_gsm8k(data, splits)}
    write_json(data / "gsm8k.json", summary)
    return summary


def _digest(problems: list[dict[str, str]]) -> str:
    return hashlib.sha256("".join(json.dumps(problem) + "\n" for problem in problems).encode()).hexdigest()
