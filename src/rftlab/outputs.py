"""Guards on what a job writes (pure Python): an output is never an input, never a file rftlab did not
write, and has one writer at a time.

A job's outputs are its fields marked `writes=KIND` (files: samples, rft, json, or file for any; folders:
checkpoint, world, or folder for any) (`rftlab.jobs.base.option`). Before it runs:
every output must differ from every input and from the other outputs; an existing output must be of its
kind as rftlab writes it (a samples file with its `.meta.json`, RFT data that starts with a gold line,
JSON with an `rftlab.` format, a checkpoint folder with `rftlab.json`, a toy world with `toyworld.json`);
and each output is locked (`.NAME.lock` beside it, an advisory `flock` that the kernel drops when its
process dies, so a lock is never stale). Every refusal is an `OutputError`: exit 2, naming both paths.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from rftlab.data import metadata_path

MARKERS = {"checkpoint": "rftlab.json", "world": "toyworld.json", "folder": None}
"""Kinds of output folders, and the file rftlab writes into each (`folder`: any folder)."""
SCAFFOLDING = {"checkpoint": {"trainer"}}
"""What a folder of the kind may hold before its marker is written (a run killed early)."""
_PEEK_BYTES = 1 << 24
"""The longest first line read of a JSONL output."""
_JSON_BYTES = 1 << 26
"""The largest JSON output read to find its format."""


class OutputError(ValueError):
    """An output that must not be written: it is an input, not rftlab's, or another run is writing it."""


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder (existing or not)."""
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_distinct(inputs: Sequence[tuple[str, Path]], outputs: Sequence[tuple[str, Path]]) -> None:
    """OutputError when an output is one of the inputs or another output (each given as (option, path))."""
    for i, (flag, path) in enumerate(outputs):
        for source, given in inputs:
            if same_file(path, given):
                raise OutputError(f"{flag} {path} is the input {source} {given}: an output never replaces an input")
        for other, earlier in outputs[:i]:
            if same_file(path, earlier):
                raise OutputError(f"{flag} {path} and {other} {earlier} are the same file: give each its own path")


def check_ours(flag: str, path: Path, kind: str) -> None:
    """OutputError when `path` exists and is not an output of `kind` that rftlab wrote."""
    if not os.path.lexists(path):
        return
    folder = kind in MARKERS
    if folder != path.is_dir() or not (folder or path.is_file()):
        wanted = "a folder" if folder else "a file"
        raise OutputError(f"{flag} {path}: exists and is not {wanted}; remove it or choose another path")
    why = _not_ours(path, kind)
    if why:
        raise OutputError(f"{flag} {path}: exists and {why}, so rftlab will not write over it; remove it or "
                          "choose another path")  # fmt: skip


def _not_ours(path: Path, kind: str) -> str | None:
    """Why an existing output is not rftlab's (None: it is, or it is empty, or its kind is not checked)."""
    if kind in MARKERS:
        marker = MARKERS[kind]
        entries = {entry.name for entry in path.iterdir() if not entry.name.startswith(".")}
        if marker is None or entries <= SCAFFOLDING.get(kind, set()) or (path / marker).is_file():
            return None
        return f"holds files but no {marker}"
    if kind == "file" or path.stat().st_size == 0:
        return None
    if kind == "samples":
        meta = metadata_path(path)
        return None if meta.is_file() else f"has no {meta.name} beside it (not samples of rftlab sample)"
    if kind == "rft":
        first = _parsed(_first_line(path))
        gold = isinstance(first, dict) and first.get("source") == "gold" and "response" in first
        return None if gold else "does not start with a gold line (not RFT data of rftlab reject)"
    document = _parsed(path.read_bytes()) if path.stat().st_size <= _JSON_BYTES else None
    fmt = document.get("format") if isinstance(document, dict) else None
    return None if isinstance(fmt, str) and fmt.startswith("rftlab.") else "is not JSON that rftlab wrote"


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.readline(_PEEK_BYTES)


def _parsed(text: bytes) -> object:
    """The JSON value of `text`; None when it does not parse."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def lock_path(path: Path) -> Path:
    """Where the lock of an output lives: `.NAME.lock` in its folder (never inside the output)."""
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def locked(flag: str, path: Path) -> Iterator[None]:
    """Holds the output's lock while the block runs; OutputError at once if another process holds it."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(flag, path, lock)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _acquire(flag: str, path: Path, lock: Path) -> int:
    """The descriptor of the lock file, locked by this process, holding its pid."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise OutputError(f"{flag} {path}: another rftlab run{holder} is writing it; wait for it to end or "
                              "choose another path") from None  # fmt: skip
        with contextlib.suppress(OSError):  # the holder before us removed the file it locked: lock the new one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        os.close(fd)


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f" (pid {text})" if text.isdigit() else ""


@contextlib.contextmanager
def guarded(inputs: Sequence[tuple[str, Path]], outputs: Sequence[tuple[str, Path, str]]) -> Iterator[None]:
    """Checks the outputs (distinct from the inputs and each other, rftlab's where they exist) and holds
    their locks while the block runs."""
    check_distinct(inputs, [(flag, path) for flag, path, _ in outputs])
    with contextlib.ExitStack() as stack:
        for flag, path, kind in outputs:
            stack.enter_context(locked(flag, path))
            check_ours(flag, path, kind)  # under the lock: no other run changes it meanwhile
        yield
