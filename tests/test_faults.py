"""Fault injection: every stage killed (SIGKILL) at random points and run again ends as an uninterrupted run;
a full disk (a small tmpfs) gives exit 2 naming the file, leaves no half-written output, and the run after
space is freed is the uninterrupted one; a second writer of any verb's output is refused at once."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rftlab.cli import main
from rftlab.outputs import lock_path, locked

VOLATILE = ("train_seconds", "resumed")
"""rftlab.json fields that tell how a run went (its wall-clock time, whether it resumed), not what it made."""
NOT_COMPARED = ("training_args.bin",)
"""Files that record where they were written (the Trainer's pickled arguments hold the output folder)."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A small world, a tiny base pre-trained on it, an SFT model and its samples: every stage's inputs."""
    root = tmp_path_factory.mktemp("inputs")
    assert main(["toyworld", "--out", str(root / "data"), "--n-train", "48", "--n-valid", "8", "--n-test", "24",
                 "--corpus-docs", "400"]) == 0  # fmt: skip
    assert main(pretrain_argv({"data": root / "data"}, root / "base")) == 0
    paths = {"data": root / "data", "base": root / "base", "sft": root / "sft", "samples": root / "s.jsonl"}
    assert main(sft_argv(paths, root / "sft")) == 0
    assert main(sample_argv(paths, root / "s.jsonl")) == 0
    return paths


def toyworld_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["toyworld", "--out", str(out), "--n-train", "400", "--n-test", "200", "--corpus-docs", "4000"]


def pretrain_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["pretrain", "--corpus", str(paths["data"] / "pretrain.txt"), "--out", str(out), "--preset", "tiny",
            "--tokens", "40000", "--batch-size", "4", "--device-batch", "4", "--save-every", "4",
            "--quiet"]  # fmt: skip


def sft_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["sft", "--model", str(paths["base"]), "--data", str(paths["data"] / "train.jsonl"), "--out", str(out),
            "--recipe", "toy-sft", "--epochs", "3", "--batch-size", "8", "--device-batch", "8", "--save-every", "2",
            "--validation", str(paths["data"] / "valid.jsonl"), "--eval-every", "4", "--quiet"]  # fmt: skip


def sample_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["sample", "--model", str(paths["sft"]), "--data", str(paths["data"] / "train.jsonl"), "--out", str(out),
            "-k", "4", "--batch-size", "8", "--max-new-tokens", "96", "--quiet"]  # fmt: skip


def reject_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["reject", "--train", str(paths["data"] / "train.jsonl"), "--out", str(out), "--stats",
            str(out.with_name("stats.json")), "--quiet", str(paths["samples"])]  # fmt: skip


def eval_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["eval", "--model", str(paths["sft"]), "--data", str(paths["data"] / "test.jsonl"), "--out", str(out),
            "-k", "2", "--batch-size", "8", "--max-new-tokens", "96", "--quiet"]  # fmt: skip


STAGES: dict[str, tuple[Callable[[dict[str, Path], Path], list[str]], str]] = {
    "toyworld": (toyworld_argv, "data"),
    "pretrain": (pretrain_argv, "model"),
    "sft": (sft_argv, "model"),
    "sample": (sample_argv, "samples.jsonl"),
    "reject": (reject_argv, "rft.jsonl"),
    "eval": (eval_argv, "eval.json"),
}
"""Each stage's command for an output path, and the output's name inside the folder a run is given."""
WRITE_LAST = {"toyworld", "reject"}
"""Stages that compute first and write at the end (their work begins when they take the lock; the others' when
they first write, after loading torch and the model)."""


def made(folder: Path) -> dict[str, object]:
    """What a run left in its folder: every file's bytes (JSON parsed, without VOLATILE fields), leaving out
    lock files, NOT_COMPARED and the trainer's checkpoints, which a finished run no longer needs."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        ignored = path.name.endswith(".lock") or path.name in NOT_COMPARED or "trainer" in relative.parts
        if not path.is_file() or ignored:
            continue
        files[str(relative)] = _content(path)
    return files


def _content(path: Path) -> object:
    if path.suffix != ".json":
        return path.read_bytes()
    value = json.loads(path.read_text())
    return {key: item for key, item in value.items() if key not in VOLATILE} if isinstance(value, dict) else value


@pytest.fixture(scope="module")
def references(inputs) -> Callable[[str], tuple[dict[str, object], float]]:
    """Each stage's uninterrupted run (made once, in this process): what it made, and its seconds."""
    made_by: dict[str, tuple[dict[str, object], float]] = {}

    def reference(stage: str) -> tuple[dict[str, object], float]:
        if stage not in made_by:
            argv, name = STAGES[stage]
            folder = inputs["data"].parent / f"reference-{stage}"
            start = time.perf_counter()
            assert main(argv(inputs, folder / name)) == 0
            made_by[stage] = made(folder), time.perf_counter() - start
        return made_by[stage]

    return reference


def kill_at(argv: list[str], output: Path, delay: float, on_lock: bool) -> bool:
    """Starts the command, waits until its work has begun (it took its output's lock, or `on_lock` False: it
    wrote under the output's folder), kills it with SIGKILL `delay` seconds later; True if it was still running
    then."""
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "rftlab", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    begun = (
        (lambda: _mtime(lock_path(output)) >= started) if on_lock else (lambda: _written_since(output.parent, started))
    )
    deadline = time.monotonic() + 120
    while not begun() and process.poll() is None:
        assert time.monotonic() < deadline, "the command wrote nothing"
        time.sleep(0.005)
    time.sleep(delay)
    running = process.poll() is None
    process.kill()
    _, error = process.communicate()
    assert running or process.returncode == 0, error.decode()[-2000:]
    return running


def _written_since(folder: Path, start: float) -> bool:
    """Whether a file or folder under `folder` other than a lock was made or changed since `start`."""
    paths = folder.rglob("*") if folder.exists() else ()
    return any(not path.name.endswith(".lock") and _mtime(path) >= start for path in paths)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # a temporary file renamed meanwhile
        return 0.0


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_killed_at_random_points_and_rerun_ends_as_the_uninterrupted_run(stage, inputs, references, tmp_path):
    """Killed at a seeded random point of its work, then killed again at one of the resumed run's, then run to
    the end: the folder holds what the uninterrupted run made, byte for byte."""
    expected, seconds = references(stage)
    argv, name = STAGES[stage]
    output, rng = tmp_path / "run" / name, random.Random(stage)
    window = seconds
    while not kill_at(argv(inputs, output), output, rng.uniform(0, window), stage in WRITE_LAST):
        shutil.rmtree(output.parent)  # it ended first (a faster process than the reference): a shorter window
        window /= 2
        assert window > seconds / 64, f"{stage} always ended before it could be killed"
    kill_at(argv(inputs, output), output, rng.uniform(0, window), stage in WRITE_LAST)  # or it ends: no matter
    assert main(argv(inputs, output)) == 0
    assert made(tmp_path / "run") == expected


@contextmanager
def small_disk(folder: Path, size: int, options: str = "") -> Iterator[Path]:
    """`folder` as a tmpfs of `size` bytes, mounted with `options` besides (root only: skipped elsewhere)."""
    folder.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def grow(folder: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def size_of(files: dict[str, object]) -> int:
    return sum(len(value) if isinstance(value, bytes) else len(json.dumps(value)) for value in files.values())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_full_disk_exits_2_naming_the_file_and_the_run_after_space_is_freed_is_the_uninterrupted_one(
    stage, inputs, references, tmp_path, capsys
):
    """On a disk with room for half the output (a tmpfs), the stage exits 2 with `PATH: No space left on
    device`, leaves no temporary file and no output that looks finished; given room, the same command makes
    what the uninterrupted run made."""
    expected, _ = references(stage)
    argv, name = STAGES[stage]
    with small_disk(tmp_path / "run", max(4096, size_of(expected) // 2)) as disk:
        assert main(argv(inputs, disk / name)) == 2
        message = capsys.readouterr().err
        assert "No space left on device" in message and str(disk) in message, message
        assert not [path for path in disk.rglob("*.tmp")], "temporary files left behind"
        assert made(disk) != expected
        grow(disk, 64 * size_of(expected) + 2**20)
        assert main(argv(inputs, disk / name)) == 0
        assert made(disk) == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_read_only_disk_exits_2_naming_the_path(stage, inputs, tmp_path, capsys):
    argv, name = STAGES[stage]
    with small_disk(tmp_path / "run", 1 << 20, ",ro") as disk:
        assert main(argv(inputs, disk / name)) == 2
        message = capsys.readouterr().err
        assert "Read-only file system" in message and str(disk) in message, message


def budget_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["budget", str(paths["samples"]), "--train", str(paths["data"] / "train.jsonl"), "--out", str(out), "-k",
            "2", "--until-correct", "1", "--max-k", "4", "-q"]  # fmt: skip


WRITERS = {
    **STAGES,
    "budget": (budget_argv, "budget.jsonl"),
    "gsm8k": (lambda paths, out: ["gsm8k", "--out", str(out), "--source", str(paths["data"])], "gsm8k"),
    "demo": (lambda paths, out: ["demo", "--out", str(out), "--preset", "tiny", "--quiet"], "demo"),
    "study": (lambda paths, out: ["study", str(STUDY), "--out", str(out), "--quiet"], "study"),
}
"""Every verb that writes: the stages, and the commands that run several."""
STUDY = Path(__file__).resolve().parents[1] / "studies" / "quick.yaml"


@pytest.mark.parametrize("verb", list(WRITERS))
def test_a_second_writer_of_any_verb_s_output_is_refused_at_once_naming_the_holder(verb, inputs, tmp_path, capsys):
    """While another process holds an output's lock, the verb exits 2 before any work, naming that pid, and
    writes nothing."""
    argv, name = WRITERS[verb]
    output = tmp_path / "out" / name
    output.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(output)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        start = time.perf_counter()
        assert main(argv(inputs, output)) == 2
        assert time.perf_counter() - start < 5
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert made(tmp_path / "out") == {}
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


HOLD = """
import sys, time
from pathlib import Path
from rftlab.outputs import lock_path, locked
with locked("--out", Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_two_runs_started_together_leave_one_writer_and_the_uninterrupted_file(inputs, references, tmp_path):
    """Two `rftlab sample` runs on one output started at once: one exits 2 naming the other, and the file is
    the single run's (no path twice)."""
    expected, _ = references("sample")
    output = tmp_path / "run" / "samples.jsonl"
    runs = [subprocess.Popen([sys.executable, "-m", "rftlab", *sample_argv(inputs, output)], stderr=subprocess.PIPE)
            for _ in range(2)]  # fmt: skip
    codes = sorted(run.wait() for run in runs)
    assert codes == [0, 2], [run.stderr.read().decode()[-1000:] for run in runs]
    assert made(tmp_path / "run") == expected


def test_the_lock_is_taken_in_this_process_too(tmp_path):
    """`locked` refuses a second holder even inside one process (a study's in-process cells)."""
    with locked("--out", tmp_path / "out"), pytest.raises(ValueError, match=f"pid {os.getpid()}"):  # noqa: SIM117
        with locked("--out", tmp_path / "out"):
            pass
