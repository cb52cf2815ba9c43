import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from conftest import write_lines
from rftlab.calculator import annotations, check_equation, equation_key
from rftlab.cli import main
from rftlab.data import DataError, Problem
from rftlab.reject import FarthestPaths, reject, solved_buckets, statistics, summary

A = "<<5+5=10>>10\n#### 10"
B = "<<2*5=10>>10\n#### 10"
FAR_A = "Five and five make <<5+5=10>>10 in all.\n#### 10"
NEAR_A = "<<5 + 5=10>>10\n#### 10"


def problems_file(tmp_path, answers=("10",)):
    return write_lines(
        tmp_path / "train.jsonl",
        [{"query": f"q{i}", "response": f"gold <<{a}+0={a}>>{a}\n#### {a}"} for i, a in enumerate(answers)],
    )


def samples_file(path, responses, model=None, problem="0"):
    return write_lines(path, [{"id": problem, "response": r, **({"model": model} if model else {})} for r in responses])


def selected(result, index=0):
    return [text for text, _ in result.selections[index].paths]


def run(tmp_path, responses, **options):
    from rftlab.data import read_problems

    return reject(read_problems(problems_file(tmp_path)), [samples_file(tmp_path / "s.jsonl", responses)], **options)


def test_key_removes_all_whitespace_and_keeps_order():
    assert equation_key("<<2 + 3 = 5>>5 then <<5\t*2=10>>") == "2+3=5|5*2=10"
    assert equation_key("<<3+2=5>> <<5*2=10>>") != equation_key("<<2+3=5>> <<5*2=10>>")
    assert equation_key("<<5*2=10>> <<2+3=5>>") != equation_key("<<2+3=5>> <<5*2=10>>")
    assert equation_key("no annotations\n#### 10") == ""
    assert equation_key("<<5+5=11>>") is None
    assert equation_key("<<2=2|3=3>>") is None  # one annotation, whose right side is not a number


def test_farther_path_of_a_known_key_replaces_the_kept_one(tmp_path):
    assert Levenshtein.distance(FAR_A, B) > Levenshtein.distance(NEAR_A, B) > Levenshtein.distance(A, B)
    assert selected(run(tmp_path, [A, B, NEAR_A])) == [NEAR_A, B]
    assert selected(run(tmp_path, [A, B, FAR_A, NEAR_A])) == [FAR_A, B]
    assert selected(run(tmp_path, [NEAR_A, B, A])) == [NEAR_A, B]


def test_with_no_other_kept_path_the_first_of_a_key_stays(tmp_path):
    assert selected(run(tmp_path, [NEAR_A, FAR_A, A])) == [NEAR_A]


def test_paths_without_annotations_share_the_empty_key(tmp_path):
    plain, wordy = "it is ten\n#### 10", "the answer, after some thought, is ten\n#### 10"
    assert selected(run(tmp_path, [plain, B, wordy])) == [wordy, B]


def test_only_correct_and_checked_paths_are_selected(tmp_path):
    wrong_answer, wrong_equation = "<<5+5=10>>10\n#### 11", "<<5+5=11>>10\n#### 10"
    result = run(tmp_path, [wrong_answer, wrong_equation, A])
    assert selected(result) == [A]
    assert (result.samples, result.correct, result.checked) == ([3], [2], [1])


def test_no_dedup_keeps_every_checked_path_in_order(tmp_path):
    result = run(tmp_path, [A, B, A, NEAR_A, "<<5+5=11>>\n#### 10"], dedup=False)
    assert selected(result) == [A, B, A, NEAR_A]


def test_extractor_is_selectable(tmp_path):
    flexible_only = "<<5+5=10>> so the answer is 10"
    assert selected(run(tmp_path, [flexible_only])) == []
    assert selected(run(tmp_path, [flexible_only], extractor="flexible")) == [flexible_only]


def test_union_of_files_equals_the_concatenation(tmp_path):
    from rftlab.data import read_problems

    problems = read_problems(problems_file(tmp_path))
    first = samples_file(tmp_path / "m1.jsonl", [A, NEAR_A], model="m1")
    second = samples_file(tmp_path / "m2.jsonl", [B, FAR_A])
    both = write_lines(tmp_path / "both.jsonl", first.read_text().splitlines() + second.read_text().splitlines())
    pooled = reject(problems, [first, second])
    assert pooled.selections[0].paths == [(FAR_A, "m2"), (B, "m2")]  # a file without `model`: its name
    assert [t for t, _ in pooled.selections[0].paths] == selected(reject(problems, [both]))


def test_first_k_reads_each_problems_first_paths_of_each_file(tmp_path):
    from rftlab.data import read_problems

    problems = read_problems(problems_file(tmp_path, answers=("10", "10")))
    lines = [{"id": p, "response": r} for r, p in ((A, "0"), (B, "1"), ("#### 3", "0"), (FAR_A, "0"), (B, "1"))]
    first = write_lines(tmp_path / "m1.jsonl", lines)
    second = samples_file(tmp_path / "m2.jsonl", [B, A])
    result = reject(problems, [first, second], first_k=2)
    assert result.samples == [4, 2] and result.correct == [3, 2]  # FAR_A, problem 0's third path in m1: unread
    assert selected(result) == [A, B] and selected(result, 1) == [B]
    assert statistics(result)["samples_per_problem"] == 4
    with pytest.raises(ValueError, match="at least 1"):
        reject(problems, [first], first_k=0)


def test_unknown_problem_id_names_file_and_line(tmp_path):
    from rftlab.data import read_problems

    bad = write_lines(tmp_path / "s.jsonl", [{"id": "0", "response": A}, {"id": "7", "response": A}])
    with pytest.raises(DataError, match=r"s\.jsonl:2: no problem with id '7'"):
        reject(read_problems(problems_file(tmp_path)), [bad])


def test_statistics_count_coverage_and_histogram(tmp_path):
    from rftlab.data import read_problems

    problems = read_problems(problems_file(tmp_path, answers=("10", "20", "30")))
    wrong = "#### 1"
    first = write_lines(
        tmp_path / "f1.jsonl",
        [{"id": "0", "response": A}, {"id": "1", "response": wrong}, {"id": "2", "response": wrong}],
    )
    second = write_lines(
        tmp_path / "f2.jsonl",
        [{"id": "0", "response": B}, {"id": "1", "response": "<<4*5=20>>\n#### 20"}, {"id": "2", "response": wrong}],
    )
    stats = statistics(reject(problems, [first, second]))
    assert stats["coverage_by_file"] == [1 / 3, 2 / 3]
    assert stats["coverage_by_sample"] == [1 / 3, 2 / 3]
    assert stats["solved_histogram"] == {"0": 1, "1": 1, "2": 1}
    assert (stats["correct"], stats["checked"], stats["selected"]) == (3, 3, 3)
    assert stats["correct_per_problem"] == stats["distinct_per_problem"] == 1.0
    assert stats["samples_per_problem"] == 2
    assert [f["correct"] for f in stats["files"]] == [1, 2]


@pytest.mark.parametrize(
    ("k", "labels"),
    [
        (100, ["0", "1-20", "21-40", "41-60", "61-80", "81-99", "100"]),
        (10, ["0", "1-2", "3-4", "5-6", "7-8", "9", "10"]),
        (4, ["0", "1", "2", "3", "4"]),
        (1, ["0", "1"]),
    ],
)
def test_solved_buckets(k, labels):
    buckets = solved_buckets(k)
    assert [str(a) if a == b else f"{a}-{b}" for a, b in buckets] == labels
    assert [n for n in range(k + 1) for a, b in buckets if a <= n <= b] == list(range(k + 1))


def test_command_writes_gold_first_then_selection(tmp_path, capsys):
    train = problems_file(tmp_path, answers=("10", "5"))
    samples = samples_file(tmp_path / "s.jsonl", [A, B], model="sft-7b")
    out, stats_path = tmp_path / "rft.jsonl", tmp_path / "stats.json"
    assert main(["reject", "--train", str(train), "--out", str(out), "--stats", str(stats_path), str(samples)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["source"], r["query"]) for r in records] == [
        ("0", "gold", "q0"),
        ("0", "sft-7b", "q0"),
        ("0", "sft-7b", "q0"),
        ("1", "gold", "q1"),
    ]
    assert [r["response"] for r in records[1:3]] == [A, B]
    assert json.loads(stats_path.read_text())["distinct_per_problem"] == 1.0
    assert "selected (distinct)" in capsys.readouterr().out


def test_bad_input_exits_2_and_leaves_no_output(tmp_path, capsys):
    train = problems_file(tmp_path)
    samples = write_lines(tmp_path / "s.jsonl", [{"id": "0", "response": A}, "{broken"])
    out = tmp_path / "rft.jsonl"
    previous = json.dumps({"query": "q", "response": "#### 1", "id": "0", "source": "gold"}) + "\n"
    out.write_text(previous)  # an earlier run's RFT data
    assert main(["reject", "--train", str(train), "--out", str(out), str(samples)]) == 2
    assert f"{samples}:2: malformed JSON" in capsys.readouterr().err
    assert out.read_text() == previous


# Against a straightforward transcription of the paper's Algorithm 1 -------------------------------


def reference_selection(paths: list[str]) -> list[str]:
    """The reference code's loop (collect_rejection_sampling.py), for already-correct paths."""
    kept, keys = [], []
    for q in paths:
        found = annotations(q)
        if not all(check_equation(eq) for eq in found):
            continue
        key = "".join("|".join(found).split())
        if key not in keys:
            kept.append(q)
            keys.append(key)
            continue
        i = keys.index(key)
        now = kept[i]
        now_score = sum(Levenshtein.distance(now, ref) for ref in kept if ref != now)
        q_score = sum(Levenshtein.distance(q, ref) for ref in kept if ref != now)
        if q_score > now_score:
            kept[i] = q
    return kept


EQUATIONS = ["2+3=5", "3+2=5", "5*2=10", "2*5=10", "5 + 5=10", "5+5=10", "5+5=11", "10/2=5"]
path_text = st.builds(
    lambda filler, equations: filler[0] + "".join(f"<<{e}>>{filler[1]}" for e in equations) + "\n#### 10",
    st.tuples(st.text("ab ", max_size=6), st.text("xyz", max_size=4)),
    st.lists(st.sampled_from(EQUATIONS), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(path_text, max_size=40))
def test_incremental_selection_equals_the_reference(paths):
    selection = FarthestPaths()
    for text in paths:
        key = equation_key(text)
        if key is not None:
            selection.offer(key, text, "m")
    assert [text for text, _ in selection.paths] == reference_selection(paths)


def test_problems_without_samples_keep_their_gold_solution():
    result = reject([Problem("7", "q", "#### 10", "10")], [])
    assert list(result.records()) == [{"query": "q", "response": "#### 10", "id": "7", "source": "gold"}]


def test_statistics_count_the_selected_paths_that_repeat_the_gold_equation_list(tmp_path):
    from rftlab.data import read_problems

    problems = read_problems(problems_file(tmp_path, answers=("10", "20")))  # gold lists: 10+0=10, 20+0=20
    samples = write_lines(tmp_path / "s.jsonl", [
        {"id": "0", "response": "Sum=<<10+0=10>>10\n#### 10"},  # the gold's equations in other words
        {"id": "0", "response": A},
        {"id": "1", "response": "<<20+0=20>>\n#### 20"},
    ])  # fmt: skip
    stats = statistics(reject(problems, [samples]))
    assert (stats["selected"], stats["gold_repeats"]) == (3, 2)
    assert "2  (the gold solution's equation list again)" in summary(stats)
