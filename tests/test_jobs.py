"""Jobs: flags made from their fields, argv that parses back to the same job, settings checked by type."""

from pathlib import Path

import pytest

from rftlab.cli import COMMANDS, build_parser
from rftlab.jobs.base import check_settings, from_namespace
from rftlab.jobs.budget import BudgetJob
from rftlab.jobs.checkers import CheckersJob
from rftlab.jobs.eval import EvalJob
from rftlab.jobs.forecast import ForecastJob
from rftlab.jobs.reject import RejectJob
from rftlab.jobs.sample import SampleJob
from rftlab.jobs.sft import SftJob
from rftlab.jobs.study import StudyJob
from rftlab.jobs.world import WorldJob

EXAMPLES = [
    WorldJob(out=Path("w"), n_train=10, people=(2, 3, 3), cost_share=0.125, canonical=True),
    SftJob(model="base", data=Path("t.jsonl"), out=Path("o"), epochs=2.5, lr=1e-5 / 3, lora_r=8, lora_targets="q_proj"),
    SftJob(model="base", data=Path("t.jsonl"), out=Path("o"), tokens_of=Path("sft"), gradient_checkpointing=True),
    SampleJob(model="m", data=Path("d"), out=Path("o"), k=4, temperature=0.3, shard=(1, 3), quiet=True),
    SampleJob(
        model="m",
        data=Path("d"),
        out=Path("o"),
        backend="vllm",
        stop=("\n\n", "Q:"),
        enforce_eager=False,
        tensor_parallel_size=2,
    ),
    SampleJob(
        model="m",
        data=Path("d"),
        out=Path("o"),
        backend="vllm",
        enable_chunked_prefill=False,
        max_num_batched_tokens=65536,
        gpu_memory_utilization=0.25,
    ),
    SampleJob(model="m", data=Path("d"), out=Path("o"), backend="vllm", enable_chunked_prefill=True),
    BudgetJob(samples=Path("a.jsonl"), train=Path("t"), out=Path("b.jsonl"), k=2, until_correct=3, max_k=16),
    RejectJob(samples=(Path("a.jsonl"), Path("b.jsonl")), train=Path("t"), out=Path("r"), first_k=2, no_dedup=True),
    EvalJob(samples=(Path("a.jsonl"), Path("b.jsonl")), data=Path("t"), out=Path("e.json"), k=2),
    EvalJob(model="m", data=Path("t"), out=Path("e.json"), shots=8, shots_from=Path("train.jsonl")),
    ForecastJob(samples=(Path("a.jsonl"),), train=Path("t"), k=(32, 100), fit_k=8, out=Path("f.json"), level=0.9),
    CheckersJob(world=Path("w"), samples=(Path("a.jsonl"),), gsm8k=Path("g.jsonl"), n_gsm8k=50, checkers=("paper",)),
    StudyJob(config=Path("s.yaml"), jobs=2, devices=("0", "1"), dry_run=True),
]


@pytest.mark.parametrize("job", EXAMPLES, ids=lambda job: job.COMMAND)
def test_argv_parses_back_to_the_same_job(job):
    args = build_parser().parse_args(job.argv())
    assert from_namespace(args.job, args) == job


def test_every_command_is_a_job_and_floats_keep_every_digit():
    assert [job.COMMAND for job in COMMANDS] == ["toyworld", "gsm8k", "pretrain", "sft", "sample", "budget", "reject",
                                                 "eval", "forecast", "checkers", "demo", "study"]  # fmt: skip
    argv = EXAMPLES[1].argv()
    assert float(argv[argv.index("--lr") + 1]) == 1e-5 / 3


def test_a_negatable_flag_says_on_off_or_nothing():
    argv = ["sample", "--model", "m", "--data", "d", "--out", "o", "--backend", "vllm"]

    def parsed(*flags):
        args = build_parser().parse_args([*argv, *flags])
        return from_namespace(args.job, args).enable_chunked_prefill

    assert [parsed(), parsed("--enable-chunked-prefill"), parsed("--no-enable-chunked-prefill")] == [None, True, False]
    job = SampleJob(model="m", data=Path("d"), out=Path("o"), backend="vllm", enable_chunked_prefill=False)
    assert "--no-enable-chunked-prefill" in job.argv() and "--enable-chunked-prefill" not in job.argv()
    assert check_settings(SampleJob, {"enable_chunked_prefill": False}, "where") == {"enable_chunked_prefill": False}
    assert job.identity()["enable_chunked_prefill"] is False
    assert job.backend_settings().engine.enable_chunked_prefill is False


def test_jobs_hold_resolved_settings_and_identity_leaves_out_paths_and_runtime():
    job = SampleJob(model="m", data=Path("d"), out=Path("o"))
    assert (job.batch_size, job.dtype) == (256, "float32")
    assert SampleJob(model="m", data=Path("d"), out=Path("o"), backend="vllm").batch_size == 4096
    identity = job.identity()
    assert identity["max_new_tokens"] == 256 and identity["top_p"] == 1.0  # defaults are part of it
    assert not {"model", "data", "out", "quiet"} & set(identity)
    assert job.identity() == job.with_changes(out=Path("elsewhere"), quiet=True).identity()


def test_a_greedy_evaluation_does_not_depend_on_the_seed():
    greedy = EvalJob(model="m", data=Path("t"), out=Path("e"))
    assert greedy.identity() == greedy.with_changes(seed=3, temperature=1.0).identity()
    sampled = greedy.with_changes(k=4)
    assert sampled.identity() != sampled.with_changes(seed=3).identity()


@pytest.mark.parametrize(
    "job, settings, message",
    [
        (SampleJob, {"k": 2.5}, "where: k: expected an integer, got 2.5"),
        (SampleJob, {"temperature": "hot"}, "where: temperature: expected a number"),
        (SampleJob, {"backend": "tgi"}, "where: backend: 'tgi' is not one of hf, vllm"),
        (SampleJob, {"colour": 1}, "where: unknown key(s) colour"),
        (SftJob, {"gradient_checkpointing": "yes"}, "expected true or false"),
        (WorldJob, {"people": "2,x"}, "where: people: '2,x' is not a comma-separated list"),
    ],
)
def test_study_settings_are_checked_by_the_fields_types(job, settings, message):
    with pytest.raises(ValueError) as error:
        check_settings(job, settings, "where")
    assert message in str(error.value)


def test_settings_that_do_not_fit_together_are_refused_before_any_work():
    with pytest.raises(ValueError, match="--tensor-parallel-size is an option of --backend vllm"):
        SampleJob(model="m", data=Path("d"), out=Path("o"), tensor_parallel_size=2)
    with pytest.raises(ValueError, match="not both"):
        SftJob(model="m", data=Path("d"), out=Path("o"), tokens=5, epochs=1.0)
    with pytest.raises(ValueError, match="need --lora-r"):
        SftJob(model="m", data=Path("d"), out=Path("o"), lora_alpha=4.0)
    with pytest.raises(ValueError, match="one of --model and --samples"):
        EvalJob(data=Path("t"), out=Path("e"))
