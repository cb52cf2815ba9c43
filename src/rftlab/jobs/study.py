"""`rftlab study`: a scaling study's grid of cached cells, then its report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.jobs.base import AT_LEAST_ONE, IO, RUNTIME, Job, option


def parse_devices(text: str) -> tuple[str, ...]:
    """GPU ids, comma-separated: 0,1,2."""
    devices = tuple(part.strip() for part in text.split(",") if part.strip())
    if not devices:
        raise ValueError(f"{text!r} names no GPU; give ids like 0,1")
    return devices


@dataclass(frozen=True, kw_only=True)
class StudyJob(Job):
    """Runs the study file `config` (cells cached under `cache`) and writes its report under `out`."""

    COMMAND = "study"
    HELP = "a scaling study (data amount, k, pre-training loss and size, unions, budgets), resumable, with report"
    DESCRIPTION = (
        "Runs the grid of a study file (studies/*.yaml): every cell (data, pre-train, subset, SFT, sample, budget, "
        "reject, RFT, eval) is cached under a key of its settings, inputs and code, so a second run recomputes "
        "nothing, an interrupted one resumes (Ctrl-C stops it), and a changed setting reruns only what depends on "
        "it. Then writes results.json, report.md, report.html and figures."
    )

    config: Path = option(help="study file", kind=IO, positional=True, metavar="CONFIG.yaml")
    out: Path | None = option(None, "output folder (default runs/study-NAME)", kind=IO, writes="folder")
    cache: Path | None = option(None, "cell cache, shareable between studies (default OUT/cells)", kind=IO,
                                writes="folder")  # fmt: skip
    jobs: int = option(1, "independent cells run in parallel, as subprocesses", kind=RUNTIME, within=AT_LEAST_ONE)
    devices: tuple[str, ...] = option((), "GPUs to share out, one per parallel cell (with --jobs)", kind=RUNTIME,
                                      metavar="0,1,...", parse=parse_devices, show=",".join)  # fmt: skip
    dry_run: bool = option(False, "list the cells and their commands, run nothing", kind=RUNTIME)
    quiet: bool = option(False, "no progress messages", kind=RUNTIME, short="-q")

    def outputs(self) -> list[tuple[str, Path, str]]:
        """The output folder (given, or the study's default) and a cache given apart from it."""
        if self.dry_run:
            return []
        out = [("--out", self.folder(), "folder")]
        return out + ([("--cache", self.cache, "folder")] if self.cache is not None else [])

    def folder(self) -> Path:
        """--out, else runs/study-NAME."""
        from rftlab.study import load_config

        return self.out or Path("runs") / f"study-{load_config(self.config).name}"

    def run(self) -> dict[str, Any] | None:
        from rftlab.study import load_config, run_study

        config = load_config(self.config)
        out = self.folder()
        results = run_study(config, out, cache=self.cache, jobs=self.jobs, devices=self.devices,
                            dry_run=self.dry_run, quiet=self.quiet)  # fmt: skip
        return None if results is None else {**results, "out": str(out)}

    def message(self, result: dict[str, Any] | None) -> str | None:
        if result is None:
            return None
        cells = result["cells"]
        return (f"{Path(result['out']) / 'report.md'}: {len(result['runs'])} models; {cells['ran']} of "
                f"{cells['total']} cells run now, {cells['seconds'] / 60:.1f} min of compute in all")  # fmt: skip
