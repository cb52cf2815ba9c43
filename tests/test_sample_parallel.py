"""Data-parallel sampling: worker processes and separately run shards merge into the one-process file."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import save_tiny_checkpoint, write_lines
from rftlab.backends.base import BackendSettings, EngineSettings, SamplingSettings
from rftlab.sample import _worker_environments, run_sampling, shard_path

SETTINGS = SamplingSettings(k=2, temperature=1.0, max_new_tokens=16, batch_size=4)  # chunks of 2 problems
N_PROBLEMS = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny toy checkpoint, problems, and the file one process samples from them."""
    folder = tmp_path_factory.mktemp("parallel")
    save_tiny_checkpoint(folder / "tiny", seed=1)
    data = write_lines(folder / "p.jsonl", [{"query": f"q{i}", "response": f"#### {i}"} for i in range(N_PROBLEMS)])
    single = folder / "single.jsonl"
    run_sampling(str(folder / "tiny"), data, single, SETTINGS, show_progress=False)
    return folder / "tiny", data, single.read_bytes()


def command(model, data, out, *extra):
    return [
        sys.executable, "-m", "rftlab", "sample", "--model", str(model), "--data", str(data), "--out", str(out),
        "-k", "2", "--temperature", "1.0", "--max-new-tokens", "16", "--batch-size", "4", "-q", *extra,
    ]  # fmt: skip


def test_two_workers_killed_and_rerun_give_the_single_process_file(setup, tmp_path):
    model, data, single = setup
    out = tmp_path / "dp.jsonl"
    process = subprocess.Popen(command(model, data, out, "--data-parallel-size", "2"), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    shards = [shard_path(out, i, 2) for i in range(2)]
    deadline = time.monotonic() + 180
    while not any(shard.exists() and shard.stat().st_size > 0 for shard in shards):
        assert process.poll() is None and time.monotonic() < deadline, "finished before it could be killed"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the parent and its workers, as Ctrl-C or a scheduler would
    process.wait()
    written = sum(len(shard.read_bytes().splitlines()) for shard in shards if shard.exists())
    assert not out.exists() and 0 < written < 2 * N_PROBLEMS
    metadata = run_sampling(str(model), data, out, SETTINGS, BackendSettings(data_parallel=2), show_progress=False)
    assert out.read_bytes() == single
    assert metadata["shards"] == 2 and json.loads((tmp_path / "dp.jsonl.meta.json").read_text())["processes"] == 2
    # shards merged away; the killed command's lock file stays, a lock no longer (the kernel dropped it)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dp.jsonl.lock", "dp.jsonl", "dp.jsonl.meta.json"]


def test_shards_run_apart_are_merged_and_only_unfinished_ones_resampled(setup, tmp_path, monkeypatch):
    model, data, single = setup
    out = tmp_path / "s.jsonl"
    for shard in range(3):
        run_sampling(str(model), data, out, SETTINGS, shard=(shard, 3), show_progress=False)
    shards = [shard_path(out, i, 3) for i in range(3)]
    assert [json.loads(s.with_name(s.name + ".meta.json").read_text())["shard"] for s in shards] == [0, 1, 2]
    assert [len(s.read_text().splitlines()) for s in shards] == [6 * 2, 6 * 2, 4 * 2]  # chunks of 2: 3, 3 and 2
    shards[1].write_bytes(shards[1].read_bytes()[:100])  # a node killed in its first chunk
    started = []
    popen = subprocess.Popen

    def spy(args, **kwargs):
        started.append(json.loads(args[-1])["shard"])
        return popen(args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    run_sampling(str(model), data, out, SETTINGS, BackendSettings(data_parallel=3), show_progress=False)
    assert started == [1]
    assert out.read_bytes() == single
    assert not any(s.exists() for s in shards)


def test_a_shard_of_other_settings_is_refused(setup, tmp_path):
    model, data, _ = setup
    out = tmp_path / "s.jsonl"
    other = SamplingSettings(k=2, temperature=1.0, max_new_tokens=1, batch_size=4)
    run_sampling(str(model), data, out, other, shard=(0, 2), show_progress=False)
    with pytest.raises(FileExistsError, match="shard0of2 holds samples of other settings"):
        run_sampling(str(model), data, out, SETTINGS, BackendSettings(data_parallel=2))


def test_workers_get_their_own_gpus_or_a_share_of_the_threads(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    two_gpus = BackendSettings("vllm", engine=EngineSettings(tensor_parallel_size=2))
    assert [env["CUDA_VISIBLE_DEVICES"] for env in _worker_environments(2, two_gpus)] == ["3,5", "6,7"]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in _worker_environments(3, BackendSettings())] == ["3", "5", "6"]
    with pytest.raises(ValueError, match="3 worker\\(s\\) of 2 GPU\\(s\\) need 6 GPUs; 4 visible"):
        _worker_environments(3, two_gpus)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert [env["OMP_NUM_THREADS"] for env in _worker_environments(3, BackendSettings())] == ["2", "2", "2"]
