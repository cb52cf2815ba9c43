"""Scaling studies: `rftlab study CONFIG.yaml`, a declarative grid of runs built from the stages.

A study is planned as a graph of *cells*: make the data, pre-train a base, take a data subset, SFT,
sample, reject, RFT, evaluate. Each cell is one `rftlab` command (or a small in-process step) whose
outputs live in a folder named by a key: the hash of everything that determines them (the cell's
settings, the keys of its inputs, and the source of the rftlab modules and library versions it runs).
So a second run recomputes nothing, an interrupted run resumes (training from its last checkpoint,
sampling from its last batch), and changing one setting reruns only the cells that depend on it.
When every cell is done, `results.json` gathers the evaluations and `report.md` / `report.html` show
fits, plots and findings (rftlab.experiments: one module per experiment family; rftlab.report).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from rftlab.cells import CELL_FILE, Cell, CellError, CellRunner, Plan, command_line, run_cells
from rftlab.data import read_json, read_problems, write_json
from rftlab.experiments import parse_experiments, plan_experiments
from rftlab.experiments.base import StudyError, integer, number
from rftlab.experiments.base import as_list as _list
from rftlab.experiments.base import known_keys as _known_keys
from rftlab.experiments.base import mapping as _mapping
from rftlab.jobs.base import check_settings, setting_names
from rftlab.jobs.budget import BudgetJob
from rftlab.jobs.eval import EvalJob
from rftlab.jobs.pretrain import PretrainJob
from rftlab.jobs.reject import RejectJob
from rftlab.jobs.sample import SampleJob
from rftlab.jobs.sft import SftJob
from rftlab.jobs.subset import SubsetJob
from rftlab.jobs.world import WorldJob
from rftlab.models import model_fingerprint

RESULTS_FORMAT = "rftlab.study-results/1"
SPLITS = ("train", "test", "valid")
"""A study's problem files: train and test, and valid (held out from training, for checkpoint selection)."""
PLACEHOLDER = Path("<cell>")
"""Where a job's outputs go until the plan names its cell's folder."""


# Configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A base model: a toy preset pre-trained here, or an existing model (hub id or path)."""

    name: str
    preset: str | None = None
    pretrain_tokens: int | None = None
    model: str | None = None
    loss: float | None = None
    parameters: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    launch: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per-base settings over the study's (e.g. a larger model's device batch, GPUs, launcher)."""


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study file (docs/formats.md, "Study configuration")."""

    name: str
    seeds: tuple[int, ...]
    data: dict[str, Any]
    bases: tuple[Base, ...]
    experiments: dict[str, dict[str, Any]]
    pretrain: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    launch: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Command prefix per cell kind (pretrain, sft, sample), e.g. `accelerate launch --config_file F`."""
    source: str = ""

    def base(self, name: str) -> Base:
        for base in self.bases:
            if base.name == name:
                return base
        raise StudyError(f"{self.source}: unknown base {name!r}; bases are {', '.join(b.name for b in self.bases)}")


LAUNCHED = ("pretrain", "sft", "sample")  # the cells a `launch` prefix (accelerate, torchrun) can run
_TOP_KEYS = {"name", "seeds", "data", "bases", "experiments", "pretrain", "train", "sample", "eval", "launch"}
_SECTIONS: dict[str, tuple[type, set[str]]] = {
    "pretrain": (PretrainJob, {"preset", "tokens", "epochs"}),  # its seed: one base for every study seed
    "train": (SftJob, {"seed"}),
    "sample": (SampleJob, {"k", "seed", "label", "shard"}),
    "eval": (EvalJob, {"seed"}),
}
"""Each settings section's job, and the fields the study sets itself (the rest a study file may set)."""
_PROBE = {"model": "model", "data": Path("data"), "out": Path("out"), "corpus": Path("corpus"),
          "validation": Path("valid")}  # fmt: skip
_SELECTION_KEYS = ("select", "eval_every", "eval_count")
"""Training settings that need a validation split (the study gives one to every SFT and RFT cell where it has it)."""


def load_config(path: Path) -> StudyConfig:
    """Reads and checks a study file; errors name the file and the offending entry."""
    import yaml

    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_keys_loader())
    except OSError as error:
        raise StudyError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise StudyError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML: {error}") from None
    return parse_config(raw, str(path), path.parent)


def _unique_keys_loader() -> type:
    """YAML's safe loader, refusing a key given twice in a mapping (plain YAML keeps the last silently)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, Hashable):
                    continue  # the loader's own check refuses it
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys


def parse_config(raw: Any, source: str = "<study>", folder: Path = Path(".")) -> StudyConfig:
    """Checks a study configuration given as a dict (the YAML's content); relative paths are from `folder`."""
    where = source
    mapping = _mapping(raw, where)
    _known_keys(mapping, _TOP_KEYS, where)
    options = {section: _section(section, mapping.get(section), f"{where}: {section}") for section in _SECTIONS}
    if not options["eval"].get("k"):
        options["eval"].pop("k", None)  # greedy only
    entries = enumerate(_list(mapping.get("bases"), where))
    bases = tuple(_base(entry, f"{where}: bases[{i}]", options) for i, entry in entries)
    if not bases:
        raise StudyError(f"{where}: bases: at least one base model is needed")
    names = [base.name for base in bases]
    if len(set(names)) != len(names):
        raise StudyError(f"{where}: bases: names must be unique")
    data = _data(mapping.get("data"), f"{where}: data", folder)
    _check_selection(options["train"], bases, data, where)
    seeds = tuple(integer(seed, f"{where}: seeds") for seed in _list(mapping.get("seeds", [0]), f"{where}: seeds"))
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"{where}: seeds: each seed once, got {list(seeds)}")
    config = StudyConfig(
        name=str(mapping.get("name") or Path(source).stem),
        seeds=seeds or (0,),
        data=data,
        bases=bases,
        experiments={},
        launch=_launch(mapping.get("launch"), f"{where}: launch"),
        source=source,
        **options,
    )
    parsed = parse_experiments(mapping.get("experiments"), config)
    return StudyConfig(**{**config.__dict__, "experiments": parsed})


def has_validation(data: dict[str, Any]) -> bool:
    """Whether the study's data holds a validation split: the toy world's n_valid, or a valid file."""
    return data["toyworld"].get("n_valid", 0) > 0 if "toyworld" in data else "valid" in data


def _check_selection(train: dict[str, Any], bases: tuple[Base, ...], data: dict[str, Any], where: str) -> None:
    """Checkpoint-selection settings only where the data holds a validation split."""
    held = has_validation(data)
    for settings, at in [(train, f"{where}: train"), *((b.train, f"{where}: bases: {b.name}: train") for b in bases)]:
        if not held and (key := next((key for key in _SELECTION_KEYS if key in settings), None)):
            raise StudyError(f"{at}: {key} needs a validation split (data: toyworld: n_valid, or data: valid)")


def _launch(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    """A launcher for every launched kind (a string or list), or one per kind (a mapping)."""
    if not value:
        return {}
    if not isinstance(value, dict):
        value = dict.fromkeys(LAUNCHED, value)
    _known_keys(value, set(LAUNCHED), where)
    return {kind: tuple(shlex.split(prefix) if isinstance(prefix, str) else map(str, _list(prefix, where)))
            for kind, prefix in value.items() if prefix}  # fmt: skip


def _section(section: str, value: Any, where: str, over: dict[str, Any] | None = None) -> dict[str, Any]:
    """A settings section checked against its job's fields: known keys, values of the right type, and values
    the job accepts (tried on a job of these settings, over the study's section `over` for a base's own)."""
    job, fixed = _SECTIONS[section]
    spec = _mapping(value or {}, where)
    _known_keys(spec, setting_names(job) - fixed, where)
    return _checked(job, spec, where, **(over or {}))


def _checked(job: type, spec: dict[str, Any], where: str, **probe: Any) -> dict[str, Any]:
    """The settings typed by the job's fields and tried on a job (with `probe`'s fields under them)."""
    try:
        settings = check_settings(job, spec, where)
        inputs = {name: value for name, value in _PROBE.items() if name in job.__dataclass_fields__}
        job(**{**inputs, **probe, **settings})
    except ValueError as error:
        raise StudyError(str(error) if str(error).startswith(where) else f"{where}: {error}") from None
    return settings


def _base(entry: Any, where: str, study: dict[str, dict[str, Any]]) -> Base:
    spec = _mapping(entry, where)
    _known_keys(spec, {"name", "preset", "pretrain_tokens", "model", "loss", "parameters", "train", "sample", "eval",
                       "launch"}, where)  # fmt: skip
    if "name" not in spec:
        raise StudyError(f"{where}: a base needs a name")
    if ("preset" in spec) == ("model" in spec):
        raise StudyError(f"{where}: give either preset (a toy model pre-trained here) or model (an existing one)")
    if "preset" in spec and "pretrain_tokens" not in spec:
        raise StudyError(f"{where}: a toy base needs pretrain_tokens")
    return Base(
        name=str(spec["name"]),
        preset=spec.get("preset"),
        pretrain_tokens=integer(spec["pretrain_tokens"], f"{where}: pretrain_tokens", 1)
        if "pretrain_tokens" in spec
        else None,
        model=spec.get("model"),
        loss=number(spec["loss"], f"{where}: loss") if spec.get("loss") is not None else None,
        parameters=_parameters(spec.get("parameters"), f"{where}: parameters"),
        **{
            section: _section(section, spec.get(section), f"{where}: {section}", study[section])
            for section in ("train", "sample", "eval")
        },
        launch=_launch(spec.get("launch"), f"{where}: launch"),
    )


def _parameters(value: Any, where: str) -> int | None:
    """A parameter count, as a whole number or in e-notation (`1.3e9`, which YAML reads as text)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise StudyError(f"{where}: expected a number, got {value!r}") from None
    count = number(value, where)
    if count < 1 or count != int(count):
        raise StudyError(f"{where}: expected a whole number of parameters, got {value!r}")
    return int(count)


def _data(value: Any, where: str, folder: Path) -> dict[str, Any]:
    spec = _mapping(value, where)
    if "toyworld" in spec:
        _known_keys(spec, {"toyworld"}, where)
        world = _mapping(spec["toyworld"] or {}, f"{where}: toyworld")
        _known_keys(world, setting_names(WorldJob) - {"canonical"}, f"{where}: toyworld")
        return {"toyworld": _checked(WorldJob, world, f"{where}: toyworld", out=PLACEHOLDER)}
    _known_keys(spec, {"train", "test", "valid"}, where)
    if "train" not in spec or "test" not in spec:
        raise StudyError(f"{where}: give toyworld settings, or train and test problem files (and valid, optional)")
    return {split: str((folder / str(spec[split])).resolve()) for split in SPLITS if split in spec}


# Planning ---------------------------------------------------------------------------------------


def _label(*parts: object) -> str:
    return "-".join(str(part) for part in parts if part not in (None, ""))


def _fraction_label(fraction: float) -> str:
    return "f" + str(Fraction(fraction).limit_denominator(1_000_000)).replace("/", "_")


def _epoch_label(epochs: float) -> str:
    return f"e{epochs:g}"


class Planner:
    """Builds the cells of every configured experiment for one seed."""

    def __init__(self, config: StudyConfig, plan: Plan, seed: int) -> None:
        self.config, self.plan, self.seed = config, plan, seed
        self.epochs: float | None = config.train.get("epochs")
        self.sample_k: dict[str, int] = {}

    # data and models

    def world(self, canonical: bool = False) -> Cell:
        data = self.config.data
        if "toyworld" not in data:
            identity = "|".join(f"{split}={_file_digest(Path(data[split]))}" for split in SPLITS if split in data)
            return self.plan.external("world", "files", str(Path(data["train"]).parent), identity, dict(data))
        job = WorldJob(out=PLACEHOLDER, **{**data["toyworld"], "canonical": canonical})
        return self.plan.add("world", "canonical" if canonical else "default", job)

    def base(self, name: str) -> Cell:
        base = self.config.base(name)
        if base.model is not None:
            return self.plan.external(
                "pretrain", name, base.model, model_fingerprint(base.model), {"model": base.model}
            )
        world = self.world()
        settings = {"seed": self.seed, **self.config.pretrain}  # `pretrain: {seed: N}`: every seed fine-tunes one base
        job = PretrainJob(corpus=Path(world.output()) / "pretrain.txt", out=PLACEHOLDER, preset=base.preset,
                          tokens=base.pretrain_tokens, **settings)  # fmt: skip
        return self.plan.add("pretrain", _label(name, f"s{job.seed}"), job, {"data": world},
                             self.launch(name, "pretrain"))  # fmt: skip

    def launch(self, base: str, kind: str) -> tuple[str, ...]:
        """The launcher of a base's cells of this kind: the base's own, else the study's."""
        return self.config.base(base).launch.get(kind) or self.config.launch.get(kind, ())

    def options(self, base: str, section: str) -> dict[str, Any]:
        """The study's train, sample or eval settings with the base's own over them."""
        return {**getattr(self.config, section), **getattr(self.config.base(base), section)}

    def validation(self) -> dict[str, Cell]:
        """The world as a training job's `validation` input when it has a validation split (the toy world's
        n_valid, or a valid file): every SFT and RFT model is then its best checkpoint on it."""
        return {"validation": self.world()} if has_validation(self.config.data) else {}

    def subset(self, fraction: float) -> Cell | None:
        if fraction == 1:
            return None
        world = self.world()
        job = SubsetJob(data=Path(_train_path(world)), out=PLACEHOLDER, fraction=fraction, seed=self.seed)
        return self.plan.add("subset", _label(_fraction_label(fraction), f"s{self.seed}"), job, {"data": world})

    def sft(self, base: str, fraction: float = 1.0, epochs: float | None = None, canonical: bool = False,
            tokens_of: Cell | None = None) -> Cell:  # fmt: skip
        """SFT of the base on the (canonical world's, or a fraction of the) gold data for the study's epochs,
        `epochs`, or, as a control, the tokens another model (`tokens_of`, an RFT model) trained on."""
        world = self.world(canonical)
        subset = self.subset(fraction) if not canonical else None
        inputs = {"base": self.base(base), "data": subset or world, **self.validation()}
        budget = {"epochs": epochs if epochs is not None else self.epochs, "tokens": self.config.train.get("tokens")}
        if tokens_of is not None:
            inputs["tokens_of"] = tokens_of
            budget = {"epochs": None, "tokens": None, "tokens_of": Path(tokens_of.output())}
        elif budget["epochs"] is not None:
            budget["tokens"] = None
        job = self._train_job(base, inputs, budget)
        label = _label("sft", base, "canonical" if canonical else "", _fraction_label(fraction) if fraction < 1 else "",
                       _epoch_label(budget["epochs"]) if budget["epochs"] else "",
                       f"at-{tokens_of.label.removesuffix(f'-s{self.seed}')}" if tokens_of else "",
                       f"s{self.seed}")  # fmt: skip
        return self.plan.add("sft", label, job, inputs, self.launch(base, "sft"))

    def _train_job(self, base: str, inputs: dict[str, Cell], budget: dict[str, Any]) -> SftJob:
        settings = {**self.options(base, "train"), **budget, "seed": self.seed}
        if "validation" in inputs:
            settings["validation"] = Path(_world_file(inputs["validation"], "valid"))
        return SftJob(model=inputs["base"].output(), data=Path(_train_path(inputs["data"])), out=PLACEHOLDER,
                      **settings)  # fmt: skip

    def request_samples(self, model: Cell, k: int) -> None:
        self.sample_k[model.key] = max(k, self.sample_k.get(model.key, 0))

    def samples(self, model: Cell, source: str, world: Cell) -> Cell:
        k = self.sample_k[model.key]
        job = SampleJob(model=model.output(), data=Path(_train_path(world)), out=PLACEHOLDER, k=k, seed=self.seed,
                        label=source, **self.options(source, "sample"))  # fmt: skip
        inputs = {"model": model, "data": world}
        return self.plan.add("sample", _label(model.label, f"k{k}"), job, inputs, self.launch(source, "sample"))

    def budget(self, samples: Cell, world: Cell, round_k: int, until_correct: int, max_k: int) -> Cell:
        """The paths a difficulty-aware budget draws (`rftlab budget`), found in a model's uniform samples."""
        job = BudgetJob(samples=Path(samples.output()), train=Path(_train_path(world)), out=PLACEHOLDER,
                        stats=PLACEHOLDER, k=round_k, until_correct=until_correct, max_k=max_k)  # fmt: skip
        label = _label(samples.label, f"until{until_correct}", f"max{max_k}", f"round{round_k}")
        return self.plan.add("budget", label, job, {"samples": samples, "data": world})

    def rejection(self, samples: list[Cell], world: Cell, k: int, dedup: bool, label: str, verifier: str = "paper",
                  check_calculator: bool = True) -> Cell:  # fmt: skip
        inputs = {"data": world, **{f"samples{i}": cell for i, cell in enumerate(samples)}}
        job = RejectJob(samples=tuple(Path(cell.output()) for cell in samples), train=Path(_train_path(world)),
                        out=PLACEHOLDER, stats=PLACEHOLDER, first_k=k, no_dedup=not dedup, verifier=verifier,
                        no_calculator_check=not check_calculator)  # fmt: skip
        return self.plan.add("reject", label, job, inputs)

    def rft(self, base: str, selection: Cell, label: str, tokens_of: Cell | None = None) -> Cell:
        """RFT trains the base on the rejection data, as many epochs as SFT (or, as a control, SFT's tokens)."""
        inputs = {"base": self.base(base), "data": selection, **self.validation()}
        if tokens_of is not None:
            inputs["tokens_of"] = tokens_of
            budget: dict[str, Any] = {"epochs": None, "tokens": None, "tokens_of": Path(tokens_of.output())}
        else:
            budget = {"epochs": self.epochs, "tokens": None if self.epochs else self.config.train.get("tokens")}
        job = self._train_job(base, inputs, budget)
        return self.plan.add("sft", _label("rft", label, f"s{self.seed}"), job, inputs, self.launch(base, "sft"))

    def evaluate(self, model: Cell, family: str, record: dict[str, Any]) -> None:
        world = self.world()
        job = EvalJob(model=model.output(), data=Path(_world_file(world, "test")), out=PLACEHOLDER, seed=self.seed,
                      **self.options(record["base"], "eval"))  # fmt: skip
        evaluation = self.plan.add("eval", model.label, job, {"model": model, "data": world})
        self.plan.report(model, evaluation, family, {**record, "seed": self.seed, "name": model.label})


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise StudyError(f"{path}: cannot read: {error.strerror}") from None


def build_plan(config: StudyConfig, cache: Path) -> Plan:
    """Every cell of the study, for every seed."""
    plan = Plan(cache)
    try:
        for seed in config.seeds:
            plan_experiments(Planner(config, plan, seed))
    except StudyError:
        raise
    except ValueError as error:  # settings that each section allows but that a base's overrides make conflict
        raise StudyError(f"{config.source}: {error}") from None
    return plan


def _train_path(data: Cell) -> str:
    """The training problems of a world (toy or files), a subset, or RFT data."""
    return data.output() if data.kind in ("subset", "reject") else _world_file(data, "train")


def _world_file(world: Cell, split: str) -> str:
    if world.external is not None:
        return world.params[split]
    return str(Path(world.output()) / f"{split}.jsonl")


# Results ----------------------------------------------------------------------------------------


def collect_results(config: StudyConfig, plan: Plan, ran: dict[str, float]) -> dict[str, Any]:
    """results.json (docs/formats.md): the bases, every evaluated model, the experiments, the bookkeeping."""
    cells = plan.ordered()
    seconds = sum(read_json(cell.folder / CELL_FILE).get("seconds", 0.0) for cell in cells)
    world = Planner(config, plan, config.seeds[0]).world()
    data = {"kind": "toyworld" if "toyworld" in config.data else "files"}
    data.update({split: len(read_problems(Path(_world_file(world, split)))) for split in ("train", "test")})
    return {
        "format": RESULTS_FORMAT,
        "name": config.name,
        "config_file": config.source,
        "data": data,
        "seeds": list(config.seeds),
        "bases": [_base_result(config, plan, base) for base in config.bases],
        "runs": [_run_result(run) for run in plan.runs.values()],
        "experiments": config.experiments,
        "cells": {"total": len(cells), "ran": len(ran), "seconds": round(seconds, 1)},
    }


def _base_result(config: StudyConfig, plan: Plan, base: Base) -> dict[str, Any]:
    losses, parameters = [], base.parameters
    for cell in plan.cells.values():
        if cell.kind == "pretrain" and cell.external is None and cell.label.startswith(f"{base.name}-s"):
            facts = read_json(Path(cell.output()) / "rftlab.json")
            losses.append(facts["heldout_loss"])
            parameters = facts["parameters"]
    loss = sum(losses) / len(losses) if losses else base.loss
    return {"name": base.name, "preset": base.preset, "model": base.model, "parameters": parameters,
            "pretrain_tokens": base.pretrain_tokens, "loss": loss}  # fmt: skip


def _run_result(run: dict[str, Any]) -> dict[str, Any]:
    model, evaluation = run["cells"]
    facts = read_json(Path(model.output()) / "rftlab.json")
    summary = read_json(Path(evaluation.output()))
    predictions = Path(evaluation.output()).parent / summary["predictions"]
    with predictions.open(encoding="utf-8") as lines:
        correct = [int(json.loads(line)["correct_first"]) for line in lines if line.strip()]
    record = {key: value for key, value in run.items() if key not in ("cells", "selection")}
    selection = run.get("selection")
    rft_data = None
    if selection is not None:
        stats = read_json(selection.folder / "stats.json")
        rft_data = {key: stats[key] for key in ("problems", "samples", "samples_per_problem", "correct_per_problem",
                                                "checked_per_problem", "distinct_per_problem", "selected")}  # fmt: skip
        rft_data["coverage"] = stats["coverage_by_file"][-1] if stats.get("coverage_by_file") else None
    return {
        **record,
        "examples": facts["examples"],
        "tokens": facts["tokens_seen"],
        "validation": facts.get("validation"),
        "rft_data": rft_data,
        "maj1@1": summary["maj1@1"],
        "correct": correct,
        "eval_k": summary.get("k"),
        "maj1@k": summary.get("maj1@k"),
        "pass@k": summary.get("pass@k"),
        "cells": {"model": str(model.folder), "eval": str(evaluation.folder)},
    }


def run_study(
    config: StudyConfig,
    out: Path,
    *,
    cache: Path | None = None,
    jobs: int = 1,
    devices: tuple[str, ...] = (),
    dry_run: bool = False,
    quiet: bool = False,
) -> dict[str, Any] | None:
    """Plans the study, runs what is not cached, writes results.json and the report under `out`."""
    plan = build_plan(config, cache or out / "cells")
    cells = plan.ordered()

    def say(message: str) -> None:
        if not quiet:
            print(f"study {config.name}: {message}", file=sys.stderr, flush=True)

    if dry_run:
        for cell in cells:
            shown = command_line(cell)
            print(f"{'cached' if cell.done() else 'to run'}  {cell.kind:8} {cell.label}  "
                  f"{shlex.join(shown) if shown else '(in-process)'}")  # fmt: skip
        for cell in plan.unresolved():
            print(f"unresolved  {cell.kind:8} {cell.label}  {cell.external}: revision unknown (no hub, not cached)")
        return None
    if unresolved := plan.unresolved():
        raise StudyError(f"{config.source}: cannot identify the weights of {', '.join(c.external for c in unresolved)}"
                         " (the hub is out of reach and the local hub cache does not hold it): download it first, "
                         "or give a local folder")  # fmt: skip
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    runner = CellRunner(jobs > 1 or bool(devices), threads, quiet, devices)
    try:
        ran = run_cells(cells, runner, jobs, say)
    except CellError as error:
        raise StudyError(str(error)) from None
    results = collect_results(config, plan, ran)
    write_json(out / "results.json", results)
    from rftlab.report import write_study_report

    report = write_study_report(out, results)
    say(f"report: {report}")
    return results
