"""Difficulty-aware budgets: the rounds' rule, a budget run as prefixes of a uniform run, resume, refusals."""

import json
import subprocess
import sys

import pytest

from conftest import save_tiny_checkpoint, write_lines
from rftlab.backends.base import SamplingSettings
from rftlab.budgets import Budget, budget_prefix, is_checked, is_complete
from rftlab.cli import main
from rftlab.data import read_problems
from rftlab.sample import run_sampling
from test_backends import FakeBackend

SETTINGS = SamplingSettings(k=2, temperature=1.0, seed=1, batch_size=6)  # rounds of 2, chunks of 3 problems
BUDGET = Budget(until_correct=2, max_k=7)
UNIFORM = SamplingSettings(k=7, temperature=1.0, seed=1)  # the budget's cap, for every problem


def problems_file(path, n):
    """Answers 0..6: a fake path (`#### key % 7`) is right one time in seven."""
    return write_lines(path, [{"query": f"q{i}", "response": f"#### {i % 7}"} for i in range(n)])


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_problem_draws_rounds_until_enough_are_checked_or_the_cap():
    assert budget_prefix([False, True, True, False, True], BUDGET, 2) == (4, True)  # 2 checked after round 2
    assert budget_prefix([True, True, True], BUDGET, 2) == (2, True)
    assert budget_prefix([False] * 7, BUDGET, 2) == (7, True)  # rounds 2, 2, 2, then the 1 left of 7
    assert budget_prefix([False] * 6, BUDGET, 2) == (6, False)  # the cap's last round is missing
    assert budget_prefix([False, True, False], BUDGET, 2) == (2, False)
    assert is_complete([False, True, True, False], BUDGET, 2)
    assert not is_complete([False, True, True, False, True, True], BUDGET, 2)  # more than the run draws
    assert not is_complete([False, True], BUDGET, 2)  # a run cut off after its first round


def test_checked_means_right_answer_and_every_annotation_checks():
    assert is_checked("a <<2*3=6>>6\n#### 6", "6")
    assert not is_checked("a <<2*3=7>>7\n#### 6", "6")
    assert not is_checked("#### 5", "6")


def test_a_budget_run_holds_each_problems_prefix_of_a_uniform_run(tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 8)
    uniform, budgeted = tmp_path / "uniform.jsonl", tmp_path / "budget.jsonl"
    run_sampling("m", data, uniform, UNIFORM, make_backend=lambda *_: FakeBackend())
    fake = FakeBackend()
    metadata = run_sampling("m", data, budgeted, SETTINGS, make_backend=lambda *_: fake, budget=BUDGET)
    problems = read_problems(data)
    expected = []
    for problem in problems:
        paths = [r for r in records(uniform) if r["id"] == problem.id]
        drawn, finished = budget_prefix([is_checked(r["response"], problem.answer) for r in paths], BUDGET, 2)
        assert finished
        expected += paths[:drawn]
    assert records(budgeted) == expected
    counts = [sum(r["id"] == p.id for r in expected) for p in problems]
    assert len(set(counts)) > 1 and max(counts) == 7 and min(counts) < 7  # easy problems stop early
    assert metadata["paths"] == len(expected) and metadata["budget"] == {"until_correct": 2, "max_k": 7,
                                                                        "checker": "paper+calculator"}  # fmt: skip
    rounds = [[sum(n > 2 * r for n in counts[start : start + 3]) for r in range(4)] for start in (0, 3, 6)]
    assert [len(prompts) for prompts, _ in fake.calls] == [n for chunk in rounds for n in chunk if n]


@pytest.mark.parametrize("cut", [1, 40, 300, -25, -1])
def test_a_killed_budget_run_resumes_to_the_same_bytes(tmp_path, cut):
    data = problems_file(tmp_path / "p.jsonl", 8)
    straight, killed = tmp_path / "straight.jsonl", tmp_path / "killed.jsonl"
    run_sampling("m", data, straight, SETTINGS, make_backend=lambda *_: FakeBackend(), budget=BUDGET)
    run_sampling("m", data, killed, SETTINGS, make_backend=lambda *_: FakeBackend(), budget=BUDGET)
    killed.write_bytes(killed.read_bytes()[:cut])
    fake = FakeBackend()
    metadata = run_sampling("m", data, killed, SETTINGS, make_backend=lambda *_: fake, budget=BUDGET)
    assert killed.read_bytes() == straight.read_bytes()
    assert metadata["paths"] == len(records(straight))
    if cut == -1:  # only the last chunk (problems 6 and 7) is redone
        assert {len(prompts) for prompts, _ in fake.calls} <= {1, 2}


def test_a_finished_budget_run_is_not_sampled_again_and_other_budgets_are_refused(tmp_path):
    data = problems_file(tmp_path / "p.jsonl", 4)
    out = tmp_path / "s.jsonl"
    run_sampling("m", data, out, SETTINGS, make_backend=lambda *_: FakeBackend(), budget=BUDGET)
    made = []
    run_sampling("m", data, out, SETTINGS, make_backend=lambda *_: made.append(1), budget=BUDGET)
    assert made == []
    with pytest.raises(FileExistsError, match="budget"):
        run_sampling("m", data, out, SETTINGS, make_backend=lambda *_: FakeBackend(), budget=Budget(3, 7))
    with pytest.raises(FileExistsError, match="budget"):
        run_sampling("m", data, out, SETTINGS, make_backend=lambda *_: FakeBackend())


def test_budget_options_are_checked_before_any_work(tmp_path, capsys):
    data = problems_file(tmp_path / "p.jsonl", 2)
    base = ["sample", "--model", "m", "--data", str(data), "--out", str(tmp_path / "s.jsonl"), "-k", "4", "-q"]
    cases = {("--until-correct", "2"): "go together", ("--until-correct", "2", "--max-k", "3"): "--max-k 3",
             ("--until-correct", "0", "--max-k", "8"): "--until-correct",
             ("--until-correct", "2", "--max-k", "8", "--shard", "0/2"): "one process",
             ("--until-correct", "2", "--max-k", "8", "--data-parallel-size", "2"): "one process"}  # fmt: skip
    for extra, message in cases.items():
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


def test_a_real_models_budget_run_is_the_uniform_runs_prefix(tmp_path):
    """The hf backend's paths are a function of their keys: rounds of fewer prompts draw the uniform run's paths."""
    tiny = save_tiny_checkpoint(tmp_path / "tiny", seed=1)
    data = problems_file(tmp_path / "p.jsonl", 5)
    uniform, budgeted = tmp_path / "uniform.jsonl", tmp_path / "budget.jsonl"

    def sample(out, *extra):
        command = [sys.executable, "-m", "rftlab", "sample", "--model", str(tiny), "--data", str(data), "--out",
                   str(out), "--temperature", "1.0", "--max-new-tokens", "12", "-q", *extra]  # fmt: skip
        return subprocess.run(command, check=True, capture_output=True, text=True)

    sample(uniform, "-k", "6")
    printed = sample(budgeted, "-k", "2", "--until-correct", "1", "--max-k", "6", "--batch-size", "4")
    assert "paths" in printed.stdout and "per problem" in printed.stdout
    assert records(budgeted) == records(uniform)  # a random model checks nothing: every problem draws all 6


def test_resume_keeps_whole_chunks_of_finished_problems_only(tmp_path):
    from rftlab.sample import completed_budget_problems

    problems = read_problems(problems_file(tmp_path / "p.jsonl", 6))  # answers 0..5; chunks of 3 problems
    right = {p.id: [{"id": p.id, "response": f"#### {p.answer}"}] * 2 for p in problems}  # done after a round
    lines = [json.dumps(r) + "\n" for p in problems[:4] for r in right[p.id]]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(lines))
    assert completed_budget_problems(samples, problems, SETTINGS, BUDGET) == 3  # problem 3 starts the next chunk
    assert samples.read_text() == "".join(lines[:6])
    wrong = json.dumps({"id": "0", "response": "#### 9"}) + "\n"
    samples.write_text(wrong * 2 + "".join(lines[2:6]))  # problem 0 unfinished, yet problem 1 follows
    assert completed_budget_problems(samples, problems, SETTINGS, BUDGET) == 0
    assert samples.read_text() == ""


def test_a_budget_found_in_a_uniform_file_is_the_budget_runs_file(tmp_path):
    from rftlab.budgets import budget_samples

    data = problems_file(tmp_path / "p.jsonl", 8)
    uniform, budgeted, found = tmp_path / "uniform.jsonl", tmp_path / "budget.jsonl", tmp_path / "found.jsonl"
    run_sampling("m", data, uniform, UNIFORM, make_backend=lambda *_: FakeBackend())
    run_sampling("m", data, budgeted, SETTINGS, make_backend=lambda *_: FakeBackend(), budget=BUDGET)
    stats = budget_samples(read_problems(data), uniform, found, BUDGET, 2)
    assert found.read_bytes() == budgeted.read_bytes()
    paths = records(found)
    assert stats["paths"] == len(paths) and stats["short"] == 0 and stats["paths_per_problem"] == len(paths) / 8
    assert stats["at_cap"] == sum(sum(r["id"] == str(i) for r in paths) == 7 for i in range(8))
    five = tmp_path / "five.jsonl"
    five.write_text("".join(line for n, line in enumerate(uniform.read_text().splitlines(True)) if n % 7 < 5))
    assert budget_samples(read_problems(data), five, found, BUDGET, 2)["short"] >= stats["at_cap"]


def test_rftlab_budget_writes_the_budget_runs_paths_and_what_they_cost(tmp_path, capsys):
    data = problems_file(tmp_path / "p.jsonl", 8)
    uniform, budgeted, found = tmp_path / "uniform.jsonl", tmp_path / "budget.jsonl", tmp_path / "found.jsonl"
    run_sampling("m", data, uniform, UNIFORM, make_backend=lambda *_: FakeBackend())
    sampled = run_sampling("m", data, budgeted, SETTINGS, make_backend=lambda *_: FakeBackend(), budget=BUDGET)
    command = ["budget", str(uniform), "--train", str(data), "--out", str(found), "--stats", str(tmp_path / "st.json"),
               "-k", "2", "--until-correct", "2", "--max-k", "7"]  # fmt: skip
    assert main(command) == 0
    assert found.read_bytes() == budgeted.read_bytes()
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["format"] == "rftlab.budget-stats/1" and stats["paths"] == sampled["paths"]
    assert f"{stats['paths']:,} paths" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "found.jsonl.meta.json").read_text())
    assert metadata["budget"] == sampled["budget"] and metadata["paths"] == sampled["paths"]
    assert metadata["settings"]["k"] == 2 and metadata["found_in"] == str(uniform)
    assert main(command) == 0 and found.read_bytes() == budgeted.read_bytes()  # its own output: rewritten
    refusals = {("--max-k", "8"): "--max-k 8 is above the k=7",  # the uniform file holds 7 paths a problem
                ("--max-k", "1"): "--max-k 1 is below -k 2"}  # fmt: skip
    for (flag, value), message in refusals.items():
        changed = [*command[:-2], flag, value]
        assert main([*changed[:5], str(tmp_path / "other.jsonl"), *changed[6:]]) == 2
        assert message in capsys.readouterr().err
    assert main(["budget", str(budgeted), *command[2:]]) == 2  # a budget run is not a uniform one
    assert "a budget run's samples" in capsys.readouterr().err
    assert not (tmp_path / "other.jsonl").exists()
