"""Scaling studies: `rftlab study CONFIG.yaml`, a declarative grid of runs built from the stages.

A study is planned as a graph of *cells*: make the data, pre-train a base, take a data subset, SFT,
sample, reject, RFT, evaluate. Each cell is one `rftlab` command (or a small in-process step) whose
outputs live in a folder named by a key: the hash of everything that determines them (the cell's
settings, the keys of its inputs, and the source of the rftlab modules and library versions it runs).
So a second run recomputes nothing, an interrupted run resumes (training from its last checkpoint,
sampling from its last batch), and changing one setting reruns only the cells that depend on it.
When every cell is done, `results.json` gathers the evaluations and `report.md` / `report.html` show
fits, plots and findings (rftlab.report).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import queue
import random
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import metadata as library_metadata
from pathlib import Path
from typing import Any

from rftlab import __version__
from rftlab.data import read_json, read_problems, write_json, write_jsonl

RESULTS_FORMAT = "rftlab.study-results/1"
CELL_FORMAT = "rftlab.study-cell/1"
CELL_FILE = "cell.json"
FAMILIES = ("pretraining", "data", "k", "union")
EPOCH_RULES = ("both", "fixed", "scaled")

# The rftlab modules (and libraries) whose code decides each kind of cell's outputs.
_STAGE_MODULES = ("train", "models", "data")
_DECODING_MODULES = ("sample", "backends/base", "backends/hf", "backends/vllm", "decoding", "models", "data")
CODE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "world": (("toyworld", "data"), ()),
    "subset": (("data",), ()),
    "pretrain": (_STAGE_MODULES, ("torch", "transformers", "accelerate")),
    "sft": (_STAGE_MODULES, ("torch", "transformers", "accelerate")),
    "sample": (_DECODING_MODULES, ("torch", "transformers")),
    "reject": (("reject", "calculator", "answers", "data"), ("rapidfuzz",)),
    "eval": (("evaluate", "answers", "calculator", *_DECODING_MODULES), ("torch", "transformers")),
}


class StudyError(ValueError):
    """A study that cannot be planned (bad configuration) or whose cell failed."""


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
_SAMPLING_KEYS = {"temperature", "top_p", "max_new_tokens", "template", "batch_size", "dtype", "backend",
                  "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "gpu_memory_utilization",
                  "max_model_len", "distributed_executor_backend", "enforce_eager", "stop"}  # fmt: skip
_TRAIN_KEYS = {"epochs", "tokens", "recipe", "lr", "batch_size", "device_batch", "save_every", "template", "max_length",
               "dtype", "gradient_checkpointing", "log_every", "lora_r", "lora_alpha", "lora_dropout",
               "lora_targets"}  # fmt: skip
_OPTION_KEYS = {
    "pretrain": {"lr", "batch_size", "device_batch", "save_every"},
    "train": _TRAIN_KEYS,
    "sample": _SAMPLING_KEYS,
    "eval": {"k", "extractor", *_SAMPLING_KEYS},
}
_FAMILY_KEYS = {
    "pretraining": {"bases"},
    "data": {"bases", "fractions", "epochs"},
    "k": {"bases", "k", "no_dedup", "canonical", "equal_tokens"},
    "union": {"name", "sources", "targets", "k"},
}
_WORLD_KEYS = {"n_train", "n_test", "seed", "people", "cost_share", "distractors", "surface", "corpus_docs"}


def load_config(path: Path) -> StudyConfig:
    """Reads and checks a study file; errors name the file and the offending entry."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StudyError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML: {error}") from None
    return parse_config(raw, str(path), path.parent)


def parse_config(raw: Any, source: str = "<study>", folder: Path = Path(".")) -> StudyConfig:
    """Checks a study configuration given as a dict (the YAML's content); relative paths are from `folder`."""
    where = source
    mapping = _mapping(raw, where)
    _known_keys(mapping, _TOP_KEYS, where)
    options = {section: _mapping(mapping.get(section) or {}, f"{where}: {section}") for section in _OPTION_KEYS}
    for section, allowed in _OPTION_KEYS.items():
        _known_keys(options[section], allowed, f"{where}: {section}")
    if not options["eval"].get("k"):
        options["eval"].pop("k", None)  # greedy only
    if options["train"].get("epochs") is not None and options["train"].get("tokens") is not None:
        raise StudyError(f"{where}: train: give epochs or tokens, not both")
    bases = tuple(_base(entry, f"{where}: bases[{i}]") for i, entry in enumerate(_list(mapping.get("bases"), where)))
    if not bases:
        raise StudyError(f"{where}: bases: at least one base model is needed")
    names = [base.name for base in bases]
    if len(set(names)) != len(names):
        raise StudyError(f"{where}: bases: names must be unique")
    data = _data(mapping.get("data"), f"{where}: data", folder)
    seeds = tuple(int(seed) for seed in _list(mapping.get("seeds", [0]), f"{where}: seeds"))
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
    experiments = _mapping(mapping.get("experiments"), f"{where}: experiments")
    _known_keys(experiments, set(FAMILIES), f"{where}: experiments")
    parsed: dict[str, Any] = {name: _family(name, _mapping(spec, f"{where}: experiments: {name}"), config)
                              for name, spec in experiments.items() if name != "union"}  # fmt: skip
    if "union" in experiments:
        parsed["union"] = _unions(experiments["union"], config)
    if not parsed:
        raise StudyError(f"{where}: experiments: name at least one of {', '.join(FAMILIES)}")
    return StudyConfig(**{**config.__dict__, "experiments": parsed})


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StudyError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise StudyError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _known_keys(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}")


def _launch(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    """A launcher for every launched kind (a string or list), or one per kind (a mapping)."""
    if not value:
        return {}
    if not isinstance(value, dict):
        value = dict.fromkeys(LAUNCHED, value)
    _known_keys(value, set(LAUNCHED), where)
    return {kind: tuple(shlex.split(prefix) if isinstance(prefix, str) else map(str, _list(prefix, where)))
            for kind, prefix in value.items() if prefix}  # fmt: skip


def _overrides(spec: dict[str, Any], section: str, where: str) -> dict[str, Any]:
    options = _mapping(spec.get(section) or {}, f"{where}: {section}")
    _known_keys(options, _OPTION_KEYS[section], f"{where}: {section}")
    return options


def _base(entry: Any, where: str) -> Base:
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
        pretrain_tokens=int(spec["pretrain_tokens"]) if "pretrain_tokens" in spec else None,
        model=spec.get("model"),
        loss=float(spec["loss"]) if spec.get("loss") is not None else None,
        parameters=int(float(spec["parameters"])) if spec.get("parameters") is not None else None,
        **{section: _overrides(spec, section, where) for section in ("train", "sample", "eval")},
        launch=_launch(spec.get("launch"), f"{where}: launch"),
    )


def _data(value: Any, where: str, folder: Path) -> dict[str, Any]:
    spec = _mapping(value, where)
    if "toyworld" in spec:
        _known_keys(spec, {"toyworld"}, where)
        world = _mapping(spec["toyworld"] or {}, f"{where}: toyworld")
        _known_keys(world, _WORLD_KEYS, f"{where}: toyworld")
        return {"toyworld": world}
    _known_keys(spec, {"train", "test"}, where)
    if "train" not in spec or "test" not in spec:
        raise StudyError(f"{where}: give toyworld settings, or train and test problem files")
    return {split: str((folder / str(spec[split])).resolve()) for split in ("train", "test")}


def _names(value: Any, config: StudyConfig, where: str) -> list[str]:
    if value in (None, "all"):
        return [base.name for base in config.bases]
    names = [str(name) for name in _list(value, where)]
    for name in names:
        config.base(name)
    return names


def _ks(value: Any, where: str) -> list[int]:
    ks = [int(k) for k in _list(value if value is not None else [], where)]
    if any(k < 1 for k in ks):
        raise StudyError(f"{where}: k values must be at least 1")
    return sorted(set(ks))


def _family(name: str, spec: dict[str, Any], config: StudyConfig) -> dict[str, Any]:
    where = f"{config.source}: experiments: {name}"
    _known_keys(spec, _FAMILY_KEYS[name], where)
    if name == "pretraining":
        return {"bases": _names(spec.get("bases"), config, where)}
    if name == "data":
        fractions = sorted({_fraction(f, where) for f in _list(spec.get("fractions"), f"{where}: fractions")})
        rule = spec.get("epochs", "both")
        if rule not in EPOCH_RULES:
            raise StudyError(f"{where}: epochs must be one of {', '.join(EPOCH_RULES)}")
        if config.train.get("epochs") is None and rule != "fixed":
            raise StudyError(f"{where}: the epoch rule needs train: epochs")
        return {"bases": _names(spec.get("bases"), config, where), "fractions": fractions, "epochs": rule}
    if name == "k":
        ks = _ks(spec.get("k"), f"{where}: k")
        extras = {key: _ks(spec.get(key), f"{where}: {key}") for key in ("no_dedup", "canonical", "equal_tokens")}
        if not ks and not any(extras.values()):
            raise StudyError(f"{where}: k: give at least one k")
        if extras["canonical"] and "toyworld" not in config.data:
            raise StudyError(f"{where}: canonical: the canonical-world ablation needs the toy world")
        return {"bases": _names(spec.get("bases"), config, where), "k": ks, **extras}
    raise StudyError(f"{where}: unknown experiment")


def _unions(value: Any, config: StudyConfig) -> list[dict[str, Any]]:
    """One union (a mapping) or several (a list, e.g. U13B and U33B), each with a unique name."""
    where = f"{config.source}: experiments: union"
    specs = value if isinstance(value, list) else [value]
    unions = [_union(_mapping(spec, f"{where}[{i}]"), config, f"{where}[{i}]") for i, spec in enumerate(specs)]
    names = [union["name"] for union in unions]
    if len(set(names)) != len(names):
        raise StudyError(f"{where}: several unions need distinct names")
    return unions


def _union(spec: dict[str, Any], config: StudyConfig, where: str) -> dict[str, Any]:
    _known_keys(spec, _FAMILY_KEYS["union"], where)
    k = int(spec.get("k", 0))
    if k < 1:
        raise StudyError(f"{where}: k: give the paths sampled per question from each source (at least 1)")
    sources = _names(spec.get("sources"), config, where)
    if len(sources) < 2:
        raise StudyError(f"{where}: sources: a union pools at least two models")
    name = str(spec.get("name", "union"))
    if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        raise StudyError(f"{where}: name: letters, digits, '_' and '.' only")
    return {"name": name, "sources": sources, "targets": _names(spec.get("targets"), config, where), "k": k}


def _fraction(value: Any, where: str) -> float:
    try:
        fraction = float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        raise StudyError(f"{where}: fractions: {value!r} is not a number or a ratio like 1/8") from None
    if not 0 < fraction <= 1:
        raise StudyError(f"{where}: fractions: {value!r} is not in (0, 1]")
    return fraction


# Cells ------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One unit of cached work; `folder` holds its outputs and, once finished, `cell.json`."""

    kind: str
    label: str
    params: dict[str, Any]
    inputs: dict[str, Cell]
    key: str = ""
    folder: Path = Path()
    external: str | None = None  # a path or hub id that exists outside the study (no work to do)
    launch: tuple[str, ...] = ()  # a launcher (accelerate, torchrun) the command runs under; not part of the key

    def output(self) -> str:
        """The cell's main output: a data folder, a model, a file."""
        if self.external is not None:
            return self.external
        return str(self.folder / OUTPUT_NAMES[self.kind])

    def done(self) -> bool:
        return self.external is not None or (self.folder / CELL_FILE).is_file()


OUTPUT_NAMES = {
    "world": "data",
    "subset": "train.jsonl",
    "pretrain": "model",
    "sft": "model",
    "sample": "samples.jsonl",
    "reject": "rft.jsonl",
    "eval": "eval.json",
}


def _code_fingerprint(kind: str) -> str:
    modules, libraries = CODE[kind]
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).parent
    for module in modules:
        digest.update(_code_of(package / f"{module}.py").encode())
    for library in libraries:
        with contextlib.suppress(library_metadata.PackageNotFoundError):
            digest.update(f"{library}={library_metadata.version(library)}".encode())
    return digest.hexdigest()


def _code_of(path: Path) -> str:
    """The module's syntax tree without docstrings: comments, docstrings and layout do not change a key."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


class Plan:
    """The cells of a study (shared cells appear once) and the evaluated models it reports on."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.cells: dict[str, Cell] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self._fingerprints: dict[str, str] = {}

    def add(
        self,
        kind: str,
        label: str,
        params: dict[str, Any],
        inputs: dict[str, Cell] | None = None,
        launch: tuple[str, ...] = (),
    ) -> Cell:
        inputs = inputs or {}
        if kind not in self._fingerprints:
            self._fingerprints[kind] = _code_fingerprint(kind)
        identity = {
            "kind": kind,
            "params": params,
            "inputs": {role: cell.key for role, cell in sorted(inputs.items())},
            "code": self._fingerprints[kind],
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        if key not in self.cells:
            folder = self.cache / kind / f"{label}-{key}"
            self.cells[key] = Cell(kind, label, params, inputs, key, folder, launch=launch)
        return self.cells[key]

    def external(self, kind: str, label: str, location: str, identity: str, params: dict[str, Any]) -> Cell:
        """A cell whose output exists outside the study: a model by hub id or path, problem files."""
        key = hashlib.sha256(f"{kind}:{identity}".encode()).hexdigest()[:12]
        return self.cells.setdefault(key, Cell(kind, label, params, {}, key, external=location))

    def report(self, model: Cell, evaluation: Cell, family: str, record: dict[str, Any]) -> None:
        """Registers an evaluated model for results.json (a model used by several experiments appears once)."""
        run = self.runs.setdefault(evaluation.key, {**record, "families": [], "cells": (model, evaluation)})
        if family not in run["families"]:
            run["families"].append(family)

    def ordered(self) -> list[Cell]:
        """Cells with work to do or done, inputs before the cells that use them (external ones left out)."""
        order: list[Cell] = []
        seen: set[str] = set()

        def visit(cell: Cell) -> None:
            if cell.key in seen:
                return
            seen.add(cell.key)
            for source in cell.inputs.values():
                visit(source)
            if cell.external is None:
                order.append(cell)

        for cell in self.cells.values():
            visit(cell)
        return order


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
            identity = "|".join(f"{split}={_file_digest(Path(data[split]))}" for split in ("train", "test"))
            return self.plan.external("world", "files", str(Path(data["train"]).parent), identity, dict(data))
        params = {**data["toyworld"], "canonical": canonical}
        return self.plan.add("world", "canonical" if canonical else "default", params)

    def base(self, name: str) -> Cell:
        base = self.config.base(name)
        if base.model is not None:
            return self.plan.external("pretrain", name, base.model, base.model, {"model": base.model})
        params = {"preset": base.preset, "tokens": base.pretrain_tokens, "seed": self.seed, **self.config.pretrain}
        label = _label(name, f"s{self.seed}")
        return self.plan.add("pretrain", label, params, {"data": self.world()}, self.launch(name, "pretrain"))

    def launch(self, base: str, kind: str) -> tuple[str, ...]:
        """The launcher of a base's cells of this kind: the base's own, else the study's."""
        return self.config.base(base).launch.get(kind) or self.config.launch.get(kind, ())

    def options(self, base: str, section: str) -> dict[str, Any]:
        """The study's train, sample or eval settings with the base's own over them."""
        return {**getattr(self.config, section), **getattr(self.config.base(base), section)}

    def subset(self, fraction: float) -> Cell | None:
        if fraction == 1:
            return None
        label = _label(_fraction_label(fraction), f"s{self.seed}")
        return self.plan.add("subset", label, {"fraction": fraction, "seed": self.seed}, {"data": self.world()})

    def sft(self, base: str, fraction: float = 1.0, epochs: float | None = None, canonical: bool = False) -> Cell:
        world = self.world(canonical)
        subset = self.subset(fraction) if not canonical else None
        inputs = {"base": self.base(base), "data": subset or world}
        budget = {"epochs": epochs if epochs is not None else self.epochs, "tokens": self.config.train.get("tokens")}
        if budget["epochs"] is not None:
            budget["tokens"] = None
        params = {**self.options(base, "train"), **budget, "seed": self.seed}
        label = _label("sft", base, "canonical" if canonical else "", _fraction_label(fraction) if fraction < 1 else "",
                       _epoch_label(budget["epochs"]) if budget["epochs"] else "", f"s{self.seed}")  # fmt: skip
        return self.plan.add("sft", label, params, inputs, self.launch(base, "sft"))

    def request_samples(self, model: Cell, k: int) -> None:
        self.sample_k[model.key] = max(k, self.sample_k.get(model.key, 0))

    def samples(self, model: Cell, source: str, world: Cell) -> Cell:
        params = {**self.options(source, "sample"), "k": self.sample_k[model.key], "seed": self.seed, "label": source}
        inputs = {"model": model, "data": world}
        label = _label(model.label, f"k{params['k']}")
        return self.plan.add("sample", label, params, inputs, self.launch(source, "sample"))

    def rejection(self, samples: list[Cell], world: Cell, k: int, dedup: bool, label: str) -> Cell:
        inputs = {"data": world, **{f"samples{i}": cell for i, cell in enumerate(samples)}}
        return self.plan.add("reject", label, {"first_k": k, "dedup": dedup}, inputs)

    def rft(self, base: str, selection: Cell, label: str, tokens_of: Cell | None = None) -> Cell:
        """RFT trains the base on the rejection data, as many epochs as SFT (or, as a control, SFT's tokens)."""
        inputs = {"base": self.base(base), "data": selection}
        if tokens_of is not None:
            inputs["tokens_of"] = tokens_of
            budget: dict[str, Any] = {"epochs": None, "tokens": "tokens_of"}
        else:
            budget = {"epochs": self.epochs, "tokens": None if self.epochs else self.config.train.get("tokens")}
        params = {**self.options(base, "train"), **budget, "seed": self.seed}
        return self.plan.add("sft", _label("rft", label, f"s{self.seed}"), params, inputs, self.launch(base, "sft"))

    def evaluate(self, model: Cell, family: str, record: dict[str, Any]) -> None:
        params = {**self.options(record["base"], "eval"), "seed": self.seed}
        evaluation = self.plan.add("eval", model.label, params, {"model": model, "data": self.world()})
        self.plan.report(model, evaluation, family, {**record, "seed": self.seed, "name": model.label})

    # experiments

    def plan_all(self) -> None:
        experiments = self.config.experiments
        for base in experiments.get("pretraining", {}).get("bases", []):
            self.evaluate(self.sft(base), "pretraining", _sft_record(base, 1.0, self.epochs))
        if "data" in experiments:
            self.plan_data(experiments["data"])
        requests = self._sample_requests()
        for (base, canonical), k in requests.items():
            self.request_samples(self.sft(base, canonical=canonical), k)
        if "k" in experiments:
            self.plan_k(experiments["k"])
        for union in experiments.get("union", []):
            self.plan_union(union)

    def plan_data(self, spec: dict[str, Any]) -> None:
        for base in spec["bases"]:
            for fraction in spec["fractions"]:
                for epochs in _epoch_choices(self.epochs, fraction, spec["epochs"]):
                    model = self.sft(base, fraction, epochs)
                    self.evaluate(model, "data", _sft_record(base, fraction, epochs))

    def _sample_requests(self) -> dict[tuple[str, bool], int]:
        requests: dict[tuple[str, bool], int] = {}
        k_spec, union = self.config.experiments.get("k"), self.config.experiments.get("union")
        if k_spec:
            for base in k_spec["bases"]:
                ks = k_spec["k"] + k_spec["no_dedup"] + k_spec["equal_tokens"]
                if ks:
                    requests[(base, False)] = max(ks)
                if k_spec["canonical"]:
                    requests[(base, True)] = max(k_spec["canonical"])
        for spec in union or []:
            for base in {*spec["sources"], *spec["targets"]}:
                requests[(base, False)] = max(requests.get((base, False), 0), spec["k"])
        return requests

    def own_rft(
        self, base: str, k: int, dedup: bool = True, canonical: bool = False, equal_tokens: bool = False
    ) -> tuple[Cell, dict[str, Any]]:
        """RFT from the base on the first k paths of its own SFT model (in the given world, with a budget)."""
        world, tuned = self.world(canonical), self.sft(base, canonical=canonical)
        samples = self.samples(tuned, base, world)
        variant = _label("canonical" if canonical else "", "" if dedup else "nodedup")
        selection = self.rejection([samples], world, k, dedup, _label(base, f"k{k}", variant, f"s{self.seed}"))
        label = _label(base, f"k{k}", variant, "eqtokens" if equal_tokens else "")
        model = self.rft(base, selection, label, tuned if equal_tokens else None)
        record = _rft_record(base, k, dedup, [base], selection, "tokens" if equal_tokens else "epochs", self.epochs)
        return model, {**record, "world": "canonical" if canonical else "default"}

    def plan_k(self, spec: dict[str, Any]) -> None:
        for base in spec["bases"]:
            self.evaluate(self.sft(base), "k", _sft_record(base, 1.0, self.epochs))
            variants = [(k, True, False, False) for k in spec["k"]]
            variants += [(k, False, False, False) for k in spec["no_dedup"]]
            variants += [(k, True, True, False) for k in spec["canonical"]]
            variants += [(k, True, False, True) for k in spec["equal_tokens"]]
            for k, dedup, canonical, equal_tokens in variants:
                model, record = self.own_rft(base, k, dedup, canonical, equal_tokens)
                self.evaluate(model, "k", record)
            if spec["canonical"]:
                canonical_sft = self.sft(base, canonical=True)
                self.evaluate(canonical_sft, "k", {**_sft_record(base, 1.0, self.epochs), "world": "canonical"})

    def plan_union(self, spec: dict[str, Any]) -> None:
        k, world, name = spec["k"], self.world(), spec["name"]
        pooled = [self.samples(self.sft(source), source, world) for source in spec["sources"]]
        selection = self.rejection(pooled, world, k, True, _label(name, *spec["sources"], f"k{k}", f"s{self.seed}"))
        for base in spec["targets"]:
            self.evaluate(self.sft(base), "union", _sft_record(base, 1.0, self.epochs))
            model, record = self.own_rft(base, k)
            self.evaluate(model, "union", record)
            union_model = self.rft(base, selection, _label(base, name, f"k{k}"))
            record = _rft_record(base, k, True, spec["sources"], selection, "epochs", self.epochs)
            self.evaluate(union_model, "union", {**record, "union": name})


def _epoch_choices(epochs: float | None, fraction: float, rule: str) -> list[float | None]:
    """The paper's epoch search for a data fraction: E epochs, E/fraction epochs, or both."""
    if fraction == 1 or epochs is None:
        return [epochs]
    scaled = round(epochs / fraction, 6)
    return {"fixed": [epochs], "scaled": [scaled], "both": [epochs, scaled]}[rule]


def _sft_record(base: str, fraction: float, epochs: float | None) -> dict[str, Any]:
    return {"stage": "sft", "base": base, "world": "default", "fraction": fraction, "epochs": epochs,
            "budget": "epochs" if epochs else "tokens", "k": None, "dedup": None, "sources": [],
            "union": None}  # fmt: skip


def _rft_record(base: str, k: int, dedup: bool, sources: list[str], selection: Cell, budget: str,
                epochs: float | None) -> dict[str, Any]:  # fmt: skip
    return {"stage": "rft", "base": base, "world": "default", "fraction": 1.0,
            "epochs": epochs if budget == "epochs" else None, "budget": budget, "k": k, "dedup": dedup,
            "sources": sources, "union": None, "selection": selection}  # fmt: skip


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise StudyError(f"{path}: cannot read: {error.strerror}") from None


def build_plan(config: StudyConfig, cache: Path) -> Plan:
    """Every cell of the study, for every seed."""
    plan = Plan(cache)
    for seed in config.seeds:
        Planner(config, plan, seed).plan_all()
    return plan


# Running ----------------------------------------------------------------------------------------


def command(cell: Cell) -> list[str] | None:
    """The `rftlab` arguments that produce the cell (None: an in-process step)."""
    inputs, params, out = cell.inputs, cell.params, cell.output()
    if cell.kind == "world":
        settings = {key: value for key, value in params.items() if key != "canonical"}
        if "people" in settings and not isinstance(settings["people"], str):
            settings["people"] = ",".join(map(str, settings["people"]))
        return ["toyworld", "--out", out, *_options(settings), *(["--canonical"] if params["canonical"] else [])]
    if cell.kind == "subset":
        return None
    if cell.kind == "pretrain":
        corpus = str(Path(inputs["data"].output()) / "pretrain.txt")
        settings = {key: value for key, value in params.items() if key != "preset"}
        return ["pretrain", "--corpus", corpus, "--preset", params["preset"], "--out", out, *_options(settings)]
    if cell.kind == "sft":
        settings = dict(params)
        if settings.get("tokens") == "tokens_of":
            settings["tokens"] = read_json(Path(inputs["tokens_of"].output()) / "rftlab.json")["tokens_seen"]
        data = inputs["data"]
        return ["sft", "--model", inputs["base"].output(), "--data", _train_path(data), "--out", out,
                *_options(settings)]  # fmt: skip
    if cell.kind == "sample":
        return ["sample", "--model", inputs["model"].output(), "--data", _train_path(inputs["data"]), "--out", out,
                *_options(params)]  # fmt: skip
    if cell.kind == "reject":
        samples = [inputs[role].output() for role in sorted(r for r in inputs if r.startswith("samples"))]
        flags = ["--first-k", str(params["first_k"]), *([] if params["dedup"] else ["--no-dedup"])]
        stats = str(cell.folder / "stats.json")
        return ["reject", *samples, "--train", _train_path(inputs["data"]), "--out", out, "--stats", stats, *flags]
    if cell.kind == "eval":
        test = _world_file(inputs["data"], "test")
        return ["eval", "--model", inputs["model"].output(), "--data", test, "--out", out, *_options(params)]
    raise StudyError(f"no command for cell kind {cell.kind!r}")


def _train_path(data: Cell) -> str:
    """The training problems of a world (toy or files), a subset, or RFT data."""
    return data.output() if data.kind in ("subset", "reject") else _world_file(data, "train")


def _world_file(world: Cell, split: str) -> str:
    if world.external is not None:
        return world.params[split]
    return str(Path(world.output()) / f"{split}.jsonl")


def _options(settings: dict[str, Any]) -> list[str]:
    """`--name value` for each setting (k -> -k; true: the flag alone; a list: the flag per item), skipping unset
    and false ones."""
    argv: list[str] = []
    for name, value in settings.items():
        flag = "-k" if name == "k" else "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            for item in value if isinstance(value, list) else [value]:
                argv += [flag, f"{item:g}" if isinstance(item, float) else str(item)]
    return argv


def write_subset(cell: Cell) -> None:
    """A random subset of the train problems (kept in file order), the seed's draw for this fraction."""
    source = _train_path(cell.inputs["data"])
    problems = list(_raw_lines(Path(source)))
    size = max(1, round(len(problems) * cell.params["fraction"]))
    chosen = sorted(random.Random(cell.params["seed"]).sample(range(len(problems)), size))
    write_jsonl(cell.output(), (problems[i] for i in chosen))


def _raw_lines(path: Path) -> Iterable[dict[str, Any]]:
    read_problems(path)  # checks the file, with file:line errors
    with path.open(encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


class CellRunner:
    """Runs cells in process (the default) or as subprocesses (`--jobs N` > 1, or a launcher)."""

    def __init__(self, subprocesses: bool, threads: int | None, quiet: bool, devices: tuple[str, ...] = ()) -> None:
        self.subprocesses, self.threads, self.quiet = subprocesses, threads, quiet
        self.devices = devices  # GPUs shared out among parallel cells, one each (CUDA_VISIBLE_DEVICES)
        self.free_devices: queue.Queue[str] = queue.Queue()
        for device in devices:
            self.free_devices.put(device)

    def run(self, cell: Cell) -> float:
        """Does the cell's work; returns seconds. Raises StudyError (with the log's path) if it fails."""
        cell.folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        argv = command(cell)
        if argv is None:
            write_subset(cell)
        else:
            outside = self._outside(cell)
            if cell.kind != "world" and (outside or self.quiet):  # in process, a terminal shows the stage's bar
                argv = [*argv, "-q"]
            status = self._subprocess(cell, argv) if outside else self._in_process(cell, argv)
            if status == 130:
                raise KeyboardInterrupt
            if status != 0:
                log = cell.folder / "log.txt"
                raise StudyError(f"cell {cell.kind}/{cell.label} failed (exit {status}): rftlab {shlex.join(argv)}; "
                                 f"see {log}")  # fmt: skip
        seconds = time.perf_counter() - start
        write_json(cell.folder / CELL_FILE, _cell_record(cell, argv, seconds))
        return seconds

    def _outside(self, cell: Cell) -> bool:
        return self.subprocesses or bool(cell.launch)

    def _in_process(self, cell: Cell, argv: list[str]) -> int:
        from rftlab.cli import main

        with open(cell.folder / "log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            return main(argv)

    def _subprocess(self, cell: Cell, argv: list[str]) -> int:
        launcher = list(cell.launch) or [sys.executable]
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        device = self.free_devices.get() if self.devices else None  # waits for a free one
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        try:
            with open(cell.folder / "log.txt", "a", encoding="utf-8") as log:
                return subprocess.run([*launcher, "-m", "rftlab", *argv], stdout=log, stderr=log, env=env).returncode
        finally:
            if device is not None:
                self.free_devices.put(device)


def _cell_record(cell: Cell, argv: list[str] | None, seconds: float) -> dict[str, Any]:
    return {
        "format": CELL_FORMAT,
        "kind": cell.kind,
        "label": cell.label,
        "key": cell.key,
        "params": cell.params,
        "inputs": {role: source.key for role, source in cell.inputs.items()},
        "command": None if argv is None else ["rftlab", *argv],
        "launch": list(cell.launch),
        "seconds": round(seconds, 2),
        "rftlab_version": __version__,
    }


def run_cells(cells: list[Cell], runner: CellRunner, jobs: int, say: Callable[[str], None]) -> dict[str, float]:
    """Runs the cells not yet done, inputs first, up to `jobs` at a time; returns seconds per cell key."""
    todo = [cell for cell in cells if not cell.done()]
    say(f"{len(cells) - len(todo)} of {len(cells)} cells cached, {len(todo)} to run")
    seconds: dict[str, float] = {}
    pending = list(todo)
    running: dict[Future[float], Cell] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            for cell in [c for c in pending if all(source.done() for source in c.inputs.values())][
                : max(0, jobs - len(running))
            ]:
                pending.remove(cell)
                say(f"[{len(seconds) + len(running) + 1}/{len(todo)}] {cell.kind} {cell.label}")
                running[pool.submit(runner.run, cell)] = cell
            if not running:
                raise StudyError("cells wait on inputs that cannot run: " + ", ".join(c.label for c in pending))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = running.pop(future)
                try:
                    seconds[cell.key] = future.result()
                except BaseException:
                    pending.clear()
                    wait(running)
                    raise
                say(f"    done {cell.kind} {cell.label} in {seconds[cell.key]:.0f} s")
    return seconds


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
        rft_data = {key: stats[key] for key in ("problems", "samples_per_problem", "correct_per_problem",
                                                "checked_per_problem", "distinct_per_problem", "selected")}  # fmt: skip
    return {
        **record,
        "examples": facts["examples"],
        "tokens": facts["tokens_seen"],
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
            argv = command(cell) if all(source.done() for source in cell.inputs.values()) else None
            shown = "(in-process)" if cell.kind == "subset" else "(later)"
            if argv:
                shown = shlex.join([*cell.launch, "-m", "rftlab", *argv] if cell.launch else ["rftlab", *argv])
            print(f"{'cached' if cell.done() else 'to run'}  {cell.kind:8} {cell.label}  {shown}")
        return None
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    runner = CellRunner(jobs > 1 or bool(devices), threads, quiet, devices)
    ran = run_cells(cells, runner, jobs, say)
    results = collect_results(config, plan, ran)
    write_json(out / "results.json", results)
    from rftlab.report import write_study_report

    report = write_study_report(out, results)
    say(f"report: {report}")
    return results
