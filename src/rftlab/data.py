"""Problem and sample files (JSONL), and atomic output (pure Python).

Formats (docs/formats.md has the full description):

- problems: `query` + `response` (GSM8K as shipped here) or `question` + `answer` (GSM8K's own
  names); optional `id`, else the 0-based line number. The gold answer is the first `#### N` of the
  response.
- samples: `id` (the problem's) and `response` per line, optional `model` and anything else.

Every reading error is a `DataError` whose message names the file and the 1-based line.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol, TypeVar

import orjson

from rftlab.answers import extract_gsm8k

T = TypeVar("T")
KEY_CONVENTIONS = (("query", "response"), ("question", "answer"))
PROMPT_TEMPLATES = {
    # The paper's (Alpaca, no input): the response follows "### Response:" directly.
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\n{query}\n\n### Response:"
    ),
    # The toy world's: short, so that tiny models spend their capacity on the solution.
    "compact": "Q: {query}\nA: ",
}
CHAT_TEMPLATE = "chat"
"""Not a string template: the tokenizer's own chat template, the question as the user's turn."""
TEMPLATE_CHOICES = (*PROMPT_TEMPLATES, CHAT_TEMPLATE)
_PROGRESS_BYTES = 1 << 20


class Progress(Protocol):
    """Anything with tqdm's `update(n)`."""

    def update(self, n: int) -> object: ...


class DataError(ValueError):
    """Bad input data, located by file and line."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        self.path, self.line = str(path), line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem with its worked solution and gold answer (a numeric string, commas removed)."""

    id: str
    query: str
    response: str
    answer: str


class Sample(NamedTuple):
    """One sampled reasoning path; `line` is its 1-based line in its file."""

    id: str
    response: str
    model: str | None
    line: int


def iter_jsonl(path: str | os.PathLike[str], progress: Progress | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (1-based line number, object) for each non-blank line; DataError on bad JSON.

    `progress.update(n)` is told the bytes read, now and then.
    """
    try:
        with open(path, "rb") as handle:
            yield from _parse_lines(path, handle, progress)
    except OSError as error:
        raise DataError(path, None, f"cannot read: {error.strerror}") from None


def _parse_lines(
    path: str | os.PathLike[str], handle: IO[bytes], progress: Progress | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    unreported = 0
    for number, raw in enumerate(handle, start=1):
        if progress is not None:
            unreported += len(raw)
            if unreported > _PROGRESS_BYTES:
                progress.update(unreported)
                unreported = 0
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise DataError(path, number, f"malformed JSON ({error})") from None
        if not isinstance(record, dict):
            raise DataError(path, number, "expected a JSON object")
        yield number, record
    if progress is not None:
        progress.update(unreported)


def _text_field(record: dict[str, Any], key: str, path: str | os.PathLike[str], line: int) -> str:
    value = record.get(key)
    if value is None:
        raise DataError(path, line, f"missing field {key!r}")
    if not isinstance(value, str):
        raise DataError(path, line, f"field {key!r} must be a string")
    return value


def _id_field(record: dict[str, Any], path: str | os.PathLike[str], line: int) -> str | None:
    value = record.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(path, line, "field 'id' must be a string or an integer")
    return str(value)


def problem_fields(record: dict[str, Any], path: str | os.PathLike[str], line: int) -> tuple[str, str, str]:
    """(query, response, gold answer) of one problem record in either key convention; DataError when it is bad."""
    query_key, response_key = next((keys for keys in KEY_CONVENTIONS if keys[0] in record), KEY_CONVENTIONS[0])
    query = _text_field(record, query_key, path, line)
    response = _text_field(record, response_key, path, line)
    answer = extract_gsm8k(response)
    if answer is None:
        raise DataError(path, line, f"the gold answer ('#### N' in {response_key!r}) is not a number")
    return query, response, answer


def read_problems(path: str | os.PathLike[str], unique_ids: bool = True) -> list[Problem]:
    """All problems of a file, in file order; DataError on a bad line or (with `unique_ids`) a repeated id.

    RFT data repeats a problem's id on each of its paths: read it with `unique_ids=False`.
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for line, record in iter_jsonl(path):
        query, response, answer = problem_fields(record, path, line)
        problem_id = _id_field(record, path, line)
        if problem_id is None:
            problem_id = str(line - 1)
        if unique_ids and problem_id in seen:
            raise DataError(path, line, f"duplicate problem id {problem_id!r}")
        seen.add(problem_id)
        problems.append(Problem(problem_id, query, response, answer))
    return problems


def iter_samples(path: str | os.PathLike[str], progress: Progress | None = None) -> Iterator[Sample]:
    """The sampled paths of a file in file order (the sampling order); DataError on a bad line."""
    for line, record in iter_jsonl(path, progress):
        sample_id, response, model = record.get("id"), record.get("response"), record.get("model")
        if type(sample_id) is not str or type(response) is not str:  # the common case costs two checks
            sample_id = _id_field(record, path, line)
            if sample_id is None:
                raise DataError(path, line, "missing field 'id'")
            response = _text_field(record, "response", path, line)
        yield Sample(sample_id, response, model if model is None or type(model) is str else str(model), line)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Opens a temporary file beside `path` and renames it over `path` only on success. The file is created with
    mode 0666 less the umask, as `open` would (the umask is applied by the kernel, never read or changed here)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_files(target)
    fd, temporary = _create_beside(target)
    try:
        with write_errors_named(target), os.fdopen(fd, mode) as handle:  # a full disk's error names `path`
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def write_errors_named(path: str | os.PathLike[str]) -> Iterator[None]:
    """A failed write under `path` as an OSError naming it: an OSError that names no file (a full disk's), and the
    libraries' wrappers of one (safetensors' `... (os error 28)`, torch.save's `[enforce fail at
    inline_container.cc...]`, which keeps no errno: ENOSPC when the disk has under 1 MiB free)."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error
    except Exception as error:
        number = _write_error_number(error, Path(path))
        if number is None:
            raise
        raise OSError(number, f"{os.strerror(number)} ({error})", str(path)) from error


_RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)")


def _write_error_number(error: Exception, path: Path) -> int | None:
    found = _RUST_IO_ERROR.search(str(error))
    if found:
        return int(found.group(1))
    if "inline_container.cc" not in str(error):
        return None
    folder = next((parent for parent in (path, *path.parents) if parent.exists()), Path("."))
    disk = os.statvfs(folder)
    return errno.ENOSPC if disk.f_bavail * disk.f_frsize < 1 << 20 else errno.EIO


def _create_beside(target: Path) -> tuple[int, str]:
    """A new file of a name no other file has, in `target`'s folder, named for this process: its descriptor and
    path."""

    def create(temporary: str) -> tuple[int, str]:
        return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary

    return _fresh_beside(target, create)


def _fresh_beside(target: Path, make: Callable[[str], T]) -> T:
    """`make(name)` for a temporary name beside `target`, drawn again while `make` finds it taken."""
    while True:
        try:
            return make(_temporary_name(target))
        except FileExistsError:
            continue


def _temporary_name(target: Path) -> str:
    """`.NAME.PID-HEX.tmp` beside `target`: a dead writer's are recognised by the pid."""
    return str(target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A new folder beside `path` to write into, put in the place of `path` only on success: a run killed
    part-way leaves `path` as it was (what it held is removed only once the new folder is whole)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_files(target)
    temporary = _make_folder_beside(target)
    try:
        yield temporary
        _put_in_place(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _make_folder_beside(target: Path) -> Path:
    """A new, empty folder of a name no other file has, in `target`'s folder."""

    def make(temporary: str) -> Path:
        Path(temporary).mkdir(0o777)
        return Path(temporary)

    return _fresh_beside(target, make)


def _put_in_place(folder: Path, target: Path) -> None:
    """Renames `folder` to `target`; an existing `target` is moved aside first and removed after."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not os.path.lexists(target):
        os.replace(folder, target)
        return
    old = _make_folder_beside(target)
    os.replace(target, old)
    os.replace(folder, target)
    shutil.rmtree(old)


def _remove_dead_writers_files(target: Path) -> None:
    """Removes the temporary files and folders of `target` left by writers that were killed (their process is
    gone)."""
    for temporary in target.parent.glob(f".{glob.escape(target.name)}.*-*.tmp"):
        pid = temporary.name[len(target.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                if temporary.is_dir() and not temporary.is_symlink():
                    shutil.rmtree(temporary)
                else:
                    temporary.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def metadata_path(samples: str | os.PathLike[str]) -> Path:
    """Where a samples file's settings are recorded: SAMPLES.jsonl -> SAMPLES.jsonl.meta.json."""
    path = Path(samples)
    return path.with_name(path.name + ".meta.json")


def write_jsonl(path: str | os.PathLike[str], records: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> int:
    """Writes records as JSONL atomically; returns the number of lines."""
    count = 0
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(orjson.dumps(record) + b"\n")
            count += 1
    return count


def read_json(path: str | os.PathLike[str]) -> Any:
    """One JSON document; DataError when it cannot be read or parsed."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as error:
        raise DataError(path, None, f"cannot read: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise DataError(path, None, f"malformed JSON ({error})") from None


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Writes one JSON document (indented) atomically."""
    with atomic_writer(path) as handle:
        handle.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
