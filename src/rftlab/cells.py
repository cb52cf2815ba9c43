"""The study's cached units of work: cells, their keys, and running them.

A cell is one job (`rftlab.jobs`) whose outputs live in a folder named by its key: the hash of the job's
settings (defaults included), the keys of its inputs, the code it runs and the versions of the libraries it
uses. The code is the closure of the rftlab imports of the job's module (found by walking the syntax
trees, so a new import joins the key by itself), each module's syntax tree without docstrings: comments,
docstrings and layout do not change a key, any code change does. A cell whose output exists outside the
study (a model by hub id or path, problem files) is keyed by a fingerprint of its contents.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from rftlab import __version__, library_version
from rftlab.data import DataError, write_json
from rftlab.jobs.base import Job

CELL_FORMAT = "rftlab.study-cell/2"
CELL_FILE = "cell.json"
PACKAGE = Path(__file__).parent
OUTPUT_NAMES = {
    "world": "data",
    "subset": "train.jsonl",
    "pretrain": "model",
    "sft": "model",
    "sample": "samples.jsonl",
    "budget": "budget.jsonl",
    "reject": "rft.jsonl",
    "eval": "eval.json",
}
EXTRA_OUTPUTS = {"budget": {"stats": "stats.json"}, "reject": {"stats": "stats.json"}}
"""Further output fields of a kind's job, and their file names in the cell's folder."""
STAGE_ERRORS = (DataError, FileExistsError, ValueError, ChildProcessError)
"""A stage's failures for bad input; other exceptions are bugs and keep their traceback."""


class CellError(ValueError):
    """A cell that failed; the message names the cell, its command and its log."""


@dataclass
class Cell:
    """One unit of cached work; `folder` holds its outputs and, once finished, `cell.json`."""

    kind: str
    label: str
    job: Job | None
    inputs: dict[str, Cell]
    key: str = ""
    folder: Path = Path()
    external: str | None = None
    """A path or hub id that exists outside the study (no work to do)."""
    launch: tuple[str, ...] = ()
    """A launcher (accelerate, torchrun) the command runs under; not part of the key."""
    fingerprint: str | None = None
    """An external cell's identity (weights' hash, hub revision, files' digests); None: unresolved."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """The job's settings (an external cell's: its location)."""
        return self.job.identity() if self.job is not None else dict(self.extra)

    def output(self) -> str:
        """The cell's main output: a data folder, a model, a file."""
        if self.external is not None:
            return self.external
        return str(self.folder / OUTPUT_NAMES[self.kind])

    def done(self) -> bool:
        return self.external is not None or (self.folder / CELL_FILE).is_file()


# Keys ---------------------------------------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    """The source file of an rftlab module (`rftlab.x.y`), or None if it is none."""
    parts = name.split(".")
    if parts[0] != "rftlab":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


_MODULE_NAME = re.compile(r"rftlab(?:\.\w+)+")


def _imports(tree: ast.AST) -> set[str]:
    """The rftlab modules a syntax tree imports anywhere (top level or inside functions), and module names
    written as strings (`importlib.import_module("rftlab.backends.vllm")`, a registry of backend modules)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
            found.add(node.value)
    return {name for name in found if _module_file(name) is not None}


def _parents(name: str) -> list[str]:
    """The packages whose `__init__` runs before a module: rftlab.a.b -> rftlab, rftlab.a."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def _syntax(path: Path) -> tuple[str, frozenset[str]]:
    """A module's syntax tree without docstrings, and the rftlab modules it imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = frozenset(_imports(tree))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree), imports


def code_closure(module: str) -> list[str]:
    """Every rftlab module that running `module` can execute: its imports, theirs, and their packages."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        todo += [*_syntax(path)[1], *_parents(name)]
    return sorted(seen)


@cache
def _code_digest(module: str, libraries: tuple[str, ...]) -> str:
    digest = hashlib.sha256(__version__.encode())
    for name in code_closure(module):
        digest.update(f"{name}\0{_syntax(_module_file(name))[0]}\0".encode())
    for library in sorted(set(libraries)):
        digest.update(f"{library}={library_version(library)}\0".encode())
    return digest.hexdigest()


def code_fingerprint(job: Job) -> str:
    """The hash of the code a job runs (its module's closure) and of the libraries it uses."""
    return _code_digest(type(job).__module__, job.libraries())


def cell_key(kind: str, job: Job, inputs: dict[str, Cell]) -> str:
    identity = {
        "kind": kind,
        "job": type(job).__name__,
        "settings": job.identity(),
        "inputs": {role: cell.key for role, cell in sorted(inputs.items())},
        "code": code_fingerprint(job),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


# The plan -----------------------------------------------------------------------------------------


class Plan:
    """The cells of a study (shared cells appear once) and the evaluated models it reports on."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.cells: dict[str, Cell] = {}
        self.runs: dict[str, dict[str, Any]] = {}

    def add(self, kind: str, label: str, job: Job, inputs: dict[str, Cell] | None = None,
            launch: tuple[str, ...] = ()) -> Cell:  # fmt: skip
        """The cell of a job whose output fields (`out`, ...) this plan fills in with the cell's folder."""
        inputs = inputs or {}
        key = cell_key(kind, job, inputs)
        if key not in self.cells:
            folder = self.cache / kind / f"{label}-{key}"
            outputs = {"out": OUTPUT_NAMES[kind], **EXTRA_OUTPUTS.get(kind, {})}
            job = job.with_changes(**{name: folder / file for name, file in outputs.items()})
            self.cells[key] = Cell(kind, label, job, inputs, key, folder, launch=launch)
        return self.cells[key]

    def external(self, kind: str, label: str, location: str, fingerprint: str | None,
                 params: dict[str, Any]) -> Cell:  # fmt: skip
        """A cell whose output exists outside the study, keyed by its contents' fingerprint (None: unknown)."""
        identity = fingerprint if fingerprint is not None else f"unresolved:{location}"
        key = hashlib.sha256(f"{kind}:{identity}".encode()).hexdigest()[:12]
        return self.cells.setdefault(
            key, Cell(kind, label, None, {}, key, external=location, fingerprint=fingerprint, extra=params)
        )

    def report(self, model: Cell, evaluation: Cell, family: str, record: dict[str, Any]) -> None:
        """Registers an evaluated model for results.json (a model used by several experiments appears once, with
        each one's role)."""
        fresh = {**record, "families": [], "roles": [], "cells": (model, evaluation)}
        run = self.runs.setdefault(evaluation.key, fresh)
        if family not in run["families"]:
            run["families"].append(family)
        run["roles"] += [role for role in record.get("roles", []) if role not in run["roles"]]

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

    def unresolved(self) -> list[Cell]:
        """External cells whose contents could not be fingerprinted (a hub id neither the hub nor the cache knows)."""
        return [cell for cell in self.cells.values() if cell.external is not None and cell.fingerprint is None]


# Running ------------------------------------------------------------------------------------------


def command_line(cell: Cell) -> list[str] | None:
    """The command that makes the cell (None: a job without a command of its own, run in process)."""
    if cell.job is None or not cell.job.COMMAND:
        return None
    prefix = [*cell.launch, "-m", "rftlab"] if cell.launch else ["rftlab"]
    return [*prefix, *cell.job.argv()]


class CellRunner:
    """Runs cells in process on the main thread (the default), or as subprocesses (`--jobs N` > 1, a launcher)."""

    def __init__(self, subprocesses: bool, threads: int | None, quiet: bool, devices: tuple[str, ...] = ()) -> None:
        self.subprocesses, self.threads, self.quiet = subprocesses, threads, quiet
        self.devices = bool(devices)
        self.free_devices = list(devices)  # GPUs shared out among parallel cells, one each (CUDA_VISIBLE_DEVICES)
        self.lock = threading.Condition()
        self.children: set[subprocess.Popen] = set()

    def outside(self, cell: Cell) -> bool:
        return bool(cell.job.COMMAND) and (self.subprocesses or bool(cell.launch))

    def run(self, cell: Cell) -> float:
        """Does the cell's work; returns seconds. Raises CellError (with the log's path) if it fails."""
        cell.folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        job = cell.job
        if hasattr(job, "quiet") and (self.outside(cell) or self.quiet):
            job = job.with_changes(quiet=True)  # in process, a terminal shows the stage's progress bar
        if self.outside(cell):
            self._subprocess(cell, job)
        else:
            self._in_process(cell, job)
        seconds = time.perf_counter() - start
        write_json(cell.folder / CELL_FILE, _cell_record(cell, seconds))
        return seconds

    def _failed(self, cell: Cell, why: str) -> CellError:
        shown = command_line(cell)
        command = f": {shlex.join(shown)}" if shown else ""
        return CellError(f"cell {cell.kind}/{cell.label} failed ({why}){command}; see {cell.folder / 'log.txt'}")

    def _in_process(self, cell: Cell, job: Job) -> None:
        with open(cell.folder / "log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            try:
                message = job.message(job.execute())
            except STAGE_ERRORS as error:
                print(f"error: {error}")
                raise self._failed(cell, str(error)) from error
            if message:
                print(message)

    def _subprocess(self, cell: Cell, job: Job) -> None:
        launcher = list(cell.launch) or [sys.executable]
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        device = self._take_device()
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        try:
            with open(cell.folder / "log.txt", "a", encoding="utf-8") as log:
                child = subprocess.Popen([*launcher, "-m", "rftlab", *job.argv()], stdout=log, stderr=log, env=env)
                with self.lock:
                    self.children.add(child)
                status = child.wait()
                with self.lock:
                    self.children.discard(child)
        finally:
            self._give_device(device)
        if status in (130, -signal.SIGINT):
            raise KeyboardInterrupt
        if status != 0:
            raise self._failed(cell, f"exit {status}")

    def _take_device(self) -> str | None:
        """A free GPU (waiting for one), or None when the study shares out none."""
        if not self.devices:
            return None
        with self.lock:
            self.lock.wait_for(lambda: self.free_devices)
            return self.free_devices.pop(0)

    def _give_device(self, device: str | None) -> None:
        if device is not None:
            with self.lock:
                self.free_devices.append(device)
                self.lock.notify()

    def stop_children(self, grace: float = 5.0) -> None:
        """Interrupts the running subprocesses (as Ctrl-C would), then kills those still running after `grace`."""
        with self.lock:
            children = list(self.children)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


def _cell_record(cell: Cell, seconds: float) -> dict[str, Any]:
    return {
        "format": CELL_FORMAT,
        "kind": cell.kind,
        "label": cell.label,
        "key": cell.key,
        "job": type(cell.job).__name__,
        "settings": cell.job.identity(),
        "inputs": {role: source.key for role, source in cell.inputs.items()},
        "command": command_line(cell),
        "launch": list(cell.launch),
        "seconds": round(seconds, 2),
        "rftlab_version": __version__,
    }


def run_cells(cells: list[Cell], runner: CellRunner, jobs: int, say: Callable[[str], None]) -> dict[str, float]:
    """Runs the cells not yet done, inputs first; returns seconds per cell key. With `jobs` = 1, cells run one
    after another on the calling thread (Ctrl-C stops the stage at once); with more, up to `jobs` subprocess
    cells run at a time, and Ctrl-C interrupts them all."""
    todo = [cell for cell in cells if not cell.done()]
    say(f"{len(cells) - len(todo)} of {len(cells)} cells cached, {len(todo)} to run")
    seconds: dict[str, float] = {}
    if jobs <= 1:
        for number, cell in enumerate(todo, start=1):
            say(f"[{number}/{len(todo)}] {cell.kind} {cell.label}")
            seconds[cell.key] = runner.run(cell)
            say(f"    done {cell.kind} {cell.label} in {seconds[cell.key]:.0f} s")
        return seconds
    try:
        _run_parallel(todo, runner, jobs, say, seconds)
    except BaseException:
        runner.stop_children()
        raise
    return seconds


def _run_parallel(todo: list[Cell], runner: CellRunner, jobs: int, say: Callable[[str], None],
                  seconds: dict[str, float]) -> None:  # fmt: skip
    pending = list(todo)
    running: dict[Future[float], Cell] = {}
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        while pending or running:
            ready = [c for c in pending if all(source.done() for source in c.inputs.values())]
            for cell in ready[: max(0, jobs - len(running))]:
                pending.remove(cell)
                say(f"[{len(seconds) + len(running) + 1}/{len(todo)}] {cell.kind} {cell.label}")
                running[pool.submit(runner.run, cell)] = cell
            if not running:
                raise CellError("cells wait on inputs that cannot run: " + ", ".join(c.label for c in pending))
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)  # a timeout: Ctrl-C gets through
            for future in finished:
                cell = running.pop(future)
                seconds[cell.key] = future.result()
                say(f"    done {cell.kind} {cell.label} in {seconds[cell.key]:.0f} s")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
