"""A job: one frozen dataclass per stage holding every resolved setting, with `run()` and `argv()`.

The CLI builds each command's flags from the job's fields (`add_arguments`), the study builds jobs from
its YAML sections (`from_settings`) and runs them in-process (`run()`) or as `rftlab` subprocesses
(`argv()`), and the demo is a fixed list of jobs. A field's metadata (`option`) says what it is:
a *setting* (part of the job's identity, which keys the study's cache), an *io* path (inputs and outputs:
the cache keys them by their cells), or *runtime* (how the work runs, not what it makes: `quiet`,
`overwrite`). `parse(job.argv())` gives back the same job.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

SETTING, IO, RUNTIME = "setting", "io", "runtime"


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    kind: str = SETTING,
    flag: str | None = None,
    short: str | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    group: str | None = None,
    exclusive: str | None = None,
    positional: bool = False,
    parse: Callable[[str], Any] | None = None,
    show: Callable[[Any], str] | None = None,
    nargs: str | None = None,
    negatable: bool = False,
    within: Range | None = None,
    writes: str | None = None,
) -> Any:
    """A job field with what its command-line flag needs. `parse`/`show` turn a flag's text into the value and
    back (e.g. "2,3" <-> (2, 3)); `exclusive` names a group of flags of which at most one may be given;
    `nargs="+"` takes a tuple's items after one flag (else the flag repeats per item). A `bool | None` field
    is a flag that says "on"; `negatable` makes it three-way: --x (True), --no-x (False), neither (None).
    `within` is the range every value (each item of a tuple) must lie in; None is always allowed. `writes`
    marks an io field as an output of that kind (`rftlab.outputs`); the other io fields are inputs."""
    metadata = {"help": help, "kind": kind, "flag": flag, "short": short, "metavar": metavar, "choices": choices,
                "group": group, "exclusive": exclusive, "positional": positional, "parse": parse, "show": show,
                "nargs": nargs, "negatable": negatable, "within": within, "writes": writes}  # fmt: skip
    if isinstance(default, (list, dict, set)):
        raise TypeError("job defaults must be immutable")
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Range:
    """The numbers a setting may take: from `low` to `high` (None: unbounded), each end open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def error(self, value: float) -> str | None:
        """Why `value` is out of range (None: it is in)."""
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self}, got {value!r}" if below or above else None

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        ends = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {ends[0]}{_number(self.low)}, {_number(self.high)}{ends[1]}"


def _number(value: float | None) -> str:
    return f"{value:g}"


AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
SHARE = Range(0, 1, low_open=True)
"""A share of something that must not be empty: (0, 1]."""


def range_error(f: dataclasses.Field, value: Any) -> str | None:
    """Why a field's value is out of its range (None: in range, or the field has none)."""
    within: Range | None = f.metadata.get("within")
    if within is None or value is None:
        return None
    for item in value if isinstance(value, tuple) else (value,):
        if (error := within.error(item)) is not None:
            return error
    return None


@dataclass(frozen=True)
class Job:
    """The base of every stage's job; subclasses set the command's name and texts and implement `run`."""

    COMMAND: ClassVar[str] = ""
    HELP: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    LIBRARIES: ClassVar[tuple[str, ...]] = ()
    """Libraries whose versions decide the outputs (their versions join the study's cache key)."""

    def __post_init__(self) -> None:
        """Every value in its field's range, else ValueError naming the option: checked before any work."""
        for f in fields(self):
            if (error := range_error(f, getattr(self, f.name))) is not None:
                raise ValueError(f"{flag_of(f)}: {error}")

    def run(self) -> Any:
        raise NotImplementedError

    def execute(self) -> Any:
        """`run()` behind the output guards (`rftlab.outputs`): an output that is an input, or an existing file
        rftlab did not write, is refused, and every output is locked while the job runs (by the main process
        of a multi-process launch; the other ranks write their parts under its lock)."""
        from rftlab.outputs import check_distinct, guarded

        if not main_process():
            check_distinct(self.inputs(), [(flag, path) for flag, path, _ in self.outputs()])
            return self.run()
        with guarded(self.inputs(), self.outputs()):
            return self.run()

    def outputs(self) -> list[tuple[str, Path, str]]:
        """(option, path, kind) of every output this job writes."""
        return [(_name_of(f), path, f.metadata["writes"]) for f, path in self._paths() if f.metadata.get("writes")]

    def inputs(self) -> list[tuple[str, Path]]:
        """(option, path) of every input given as a local path (a model given as a hub id is none)."""
        return [(_name_of(f), path) for f, path in self._paths() if not f.metadata.get("writes")]

    def _paths(self) -> list[tuple[dataclasses.Field, Path]]:
        found = []
        for f in fields(self):
            if f.metadata.get("kind") != IO:
                continue
            value = getattr(self, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Path) or (isinstance(item, str) and os.path.lexists(item)):
                    found.append((f, Path(item)))
        return found

    def message(self, result: Any) -> str | None:
        """What the command prints when the job has run (None: nothing)."""
        return None

    def libraries(self) -> tuple[str, ...]:
        return self.LIBRARIES

    def identity(self) -> dict[str, Any]:
        """The settings that decide the outputs (defaults included; paths and runtime choices left out)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata.get("kind") == SETTING}

    def argv(self) -> list[str]:
        """The `rftlab` arguments that make this job: COMMAND, then every field that is not its default."""
        words: list[str] = [self.COMMAND]
        positional: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == f.default or (value is False and not f.metadata.get("negatable")):
                continue
            texts = _texts(f, value)
            if f.metadata.get("positional"):
                positional += texts
            elif isinstance(value, bool):
                words.append(flag_of(f) if value else "--no-" + flag_of(f).removeprefix("--"))
            else:
                repeat = isinstance(value, tuple) and f.metadata.get("show") is None and not f.metadata.get("nargs")
                words += [item for text in texts for item in (flag_of(f), text)] if repeat else [flag_of(f), *texts]
        return words + positional

    def with_changes(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)


def main_process() -> bool:
    """False in the other ranks of a multi-process launch (torchrun, accelerate launch): they stay quiet."""
    return os.environ.get("RANK", "0") == "0"


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _name_of(f: dataclasses.Field) -> str:
    """How the user gave a field: its flag, or a positional argument's name."""
    return (f.metadata.get("metavar") or f.name) if f.metadata.get("positional") else flag_of(f)


def _texts(f: dataclasses.Field, value: Any) -> list[str]:
    show = f.metadata.get("show")
    if show is not None:
        return [show(value)]
    items = value if isinstance(value, tuple) else (value,)
    return [repr(item) if isinstance(item, float) else str(item) for item in items]


def _plain(value: Any) -> Any:
    """A value as JSON holds it: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


# Command-line flags from the fields ----------------------------------------------------------------


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """The type inside `X | None`, and whether None is allowed."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), True
    return hint, False


def add_arguments(parser: argparse.ArgumentParser, cls: type[Job]) -> None:
    """Adds a flag (or positional argument) per field of the job class that the command line sets."""
    hints, groups, exclusive = typing.get_type_hints(cls), {}, {}
    order = {IO: 0, SETTING: 1, RUNTIME: 2}
    for f in sorted(fields(cls), key=lambda f: order[f.metadata.get("kind", SETTING)]):
        meta = f.metadata
        target: Any = parser
        if meta.get("group"):  # each group made once: a group left empty breaks the usage line
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        if meta.get("exclusive"):
            if meta["exclusive"] not in exclusive:
                exclusive[meta["exclusive"]] = target.add_mutually_exclusive_group()
            target = exclusive[meta["exclusive"]]
        names, spec = _argument(f, hints[f.name])
        target.add_argument(*names, **spec)


def _argument(f: dataclasses.Field, hint: Any) -> tuple[list[str], dict[str, Any]]:
    meta = f.metadata
    kind, optional = _unwrap(hint)
    required = f.default is MISSING
    spec: dict[str, Any] = {"help": _help(meta["help"], f.default, required), "dest": f.name}
    if meta.get("metavar"):
        spec["metavar"] = meta["metavar"]
    if meta.get("choices"):
        spec["choices"] = meta["choices"]
    if meta.get("positional"):
        spec.pop("dest")
        spec.update(nargs="+" if typing.get_origin(kind) is tuple else None, type=_converter(f, kind))
        return [f.name], {k: v for k, v in spec.items() if v is not None}
    names = [flag_of(f)] + ([meta["short"]] if meta.get("short") else [])
    if kind is bool:
        action = argparse.BooleanOptionalAction if meta.get("negatable") else "store_true"
        spec.update(action=action, default=None if optional else False)
        return names, spec
    spec.update(default=None if required else f.default, type=_converter(f, kind))
    if required:
        spec["required"] = True
    if typing.get_origin(kind) is tuple and not meta.get("parse"):
        spec.update({"nargs": meta["nargs"]} if meta.get("nargs") else {"action": "append"}, default=None)
    return names, spec


def _help(text: str, default: Any, required: bool) -> str:
    if required or default in (None, False, (), "") or "default" in text:
        return text
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{text} (default {shown})"


def _converter(f: dataclasses.Field, kind: Any) -> Callable[[str], Any]:
    parse = f.metadata.get("parse")
    if parse is not None:
        return _argparse_type(parse)
    if typing.get_origin(kind) is tuple:
        kind = typing.get_args(kind)[0]
    return {int: int, float: _finite_float, Path: Path}.get(kind, str)


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def from_namespace(cls: type[Job], namespace: argparse.Namespace) -> Job:
    """The job of parsed command-line arguments."""
    values = {}
    for f in fields(cls):
        value = getattr(namespace, f.name)
        if isinstance(value, list):
            value = tuple(value)
        if value is None and f.default is not MISSING and f.default is not None:
            value = f.default
        values[f.name] = value
    return cls(**values)


# Jobs from study files -----------------------------------------------------------------------------


def setting_names(cls: type[Job]) -> set[str]:
    """The fields a study file may set: the job's settings."""
    return {f.name for f in fields(cls) if f.metadata.get("kind") == SETTING}


def check_settings(cls: type[Job], settings: dict[str, Any], where: str) -> dict[str, Any]:
    """The study-file settings of a job checked and converted to the fields' types (lists become tuples);
    ValueError naming `where` and the key for an unknown key or a value of the wrong type."""
    hints, allowed = typing.get_type_hints(cls), setting_names(cls)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}")
    by_name = {f.name: f for f in fields(cls)}
    checked = {key: _typed(by_name[key], hints[key], value, f"{where}: {key}") for key, value in settings.items()}
    for key, value in checked.items():
        if (error := range_error(by_name[key], value)) is not None:
            raise ValueError(f"{where}: {key}: {error}")
    return checked


def _typed(f: dataclasses.Field, hint: Any, value: Any, where: str) -> Any:
    kind, optional = _unwrap(hint)
    if value is None:
        if optional or f.default is None:
            return None
        raise ValueError(f"{where}: a value is needed")
    parse = f.metadata.get("parse")
    if parse is not None and isinstance(value, str):
        try:
            return parse(value)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    if typing.get_origin(kind) is tuple:
        items = value if isinstance(value, list) else [value]
        inner = typing.get_args(kind)[0]
        return tuple(_scalar(inner, item, where) for item in items)
    if (choices := f.metadata.get("choices")) and value not in choices:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
    return _scalar(kind, value, where)


def _scalar(kind: Any, value: Any, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is Path:
        return Path(str(value))
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"{where}: expected text, got {value!r}")
    return str(value)
