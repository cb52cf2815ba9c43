import json

import pytest

from conftest import write_lines
from rftlab.checkers import (
    CHECKERS,
    SOUND,
    Labelled,
    Solutions,
    checker_rates,
    gsm8k_corpus,
    gsm8k_variants,
    rates,
    toy_corpus,
    toy_kind,
    world_problems,
)
from rftlab.cli import main
from rftlab.data import DataError, Problem
from rftlab.jobs.checkers import CHECKER_NAMES
from rftlab.toyworld import WorldConfig, distinct_solutions, write_toyworld

THREE_PEOPLE = WorldConfig(people=(3,), cost_share=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world") / "data"
    write_toyworld(folder, n_train=12, n_test=4, seed=3, config=THREE_PEOPLE, corpus_docs=10, n_valid=3)
    return folder


def misnamed(solution: str) -> str:
    """The solution with its first line's person renamed (its equation unchanged)."""
    first, rest = solution.split("\n", 1)
    name, equation = first.split("=", 1)
    return f"{'Zed' if name != 'Zed' else 'Amy'}={equation}\n{rest}"


def test_world_problems_regenerate_every_split_and_refuse_files_that_do_not_match(world, tmp_path):
    problems, config = world_problems(world)
    assert config == THREE_PEOPLE
    assert sorted(problems) == [f"{split}-{n:04d}" for split, count in (("test", 4), ("train", 12), ("valid", 3))
                                for n in range(1, count + 1)]  # fmt: skip
    gold = json.loads((world / "train.jsonl").read_text().splitlines()[0])
    assert gold["response"] in distinct_solutions(problems["train-0001"])
    altered = tmp_path / "altered"
    altered.mkdir()
    for name in ("toyworld.json", "test.jsonl", "valid.jsonl"):
        (altered / name).write_bytes((world / name).read_bytes())
    lines = (world / "train.jsonl").read_text().splitlines()
    write_lines(altered / "train.jsonl", [lines[1], lines[0], *lines[2:]])
    with pytest.raises(ValueError, match=r"train\.jsonl: its questions are not those of its toyworld\.json"):
        world_problems(altered)


def test_toy_kind_tells_each_kind_of_path_apart(world):
    problem = world_problems(world)[0]["train-0001"]
    texts, answer = distinct_solutions(problem), problem.answer
    solutions = Solutions.of(texts)
    assert len(texts) > 1 and all(toy_kind(s, solutions, answer) == SOUND for s in texts)
    assert toy_kind(misnamed(texts[0]), solutions, answer) == "wrong person"
    one_step = f"Total=<<{answer - 1}+1={answer}>>{answer}\n#### {answer}"
    assert toy_kind(one_step, solutions, answer) == "other equations"
    assert toy_kind(one_step.replace("+1=", "+2="), solutions, answer) == "calculator error"
    assert toy_kind(texts[0].replace(f"#### {answer}", f"#### {answer + 1}"), solutions, answer) == "wrong answer"
    assert toy_kind(texts[0].rsplit("\n", 1)[0], solutions, answer) == "wrong answer"  # no final answer


def test_toy_corpus_labels_each_sampled_path_and_refuses_an_unknown_id(world, tmp_path):
    problem = world_problems(world)[0]["train-0002"]
    solution = distinct_solutions(problem)[0]
    samples = write_lines(tmp_path / "s.jsonl", [{"id": "train-0002", "response": text}
                                                 for text in (solution, misnamed(solution), "#### 0")])  # fmt: skip
    corpus = toy_corpus(world, [samples])
    assert [(path.sound, path.kind) for path in corpus] == [(True, SOUND), (False, "wrong person"),
                                                            (False, "wrong answer")]  # fmt: skip
    assert {path.gold for path in corpus} == {str(problem.answer)}
    write_lines(tmp_path / "bad.jsonl", [{"id": "train-0099", "response": "#### 1"}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: id 'train-0099' is no problem of the world"):
        toy_corpus(world, [tmp_path / "bad.jsonl"])


GOLD = Problem("p", "q?", "He has 2*600 = <<2*600=1200>>1200.\nThen 1200+3 = <<1200+3=1203>>1203\n#### 1203", "1203")


def test_gsm8k_variants_restate_the_answer_soundly_and_break_it_unsoundly():
    variants = {path.kind: path for path in gsm8k_variants(GOLD)}
    assert {kind: path.sound for kind, path in variants.items()} == {
        "gold": True, "answer with $": True, "answer as decimal": True, "answer in words": True,
        "answer with commas": True, "wrong answer": False, "calculator error": False,
    }  # fmt: skip
    assert variants["answer with commas"].text.endswith("\n#### 1,203")
    assert variants["answer in words"].text.endswith("1203\nThe answer is 1203.")
    assert variants["wrong answer"].text.endswith("\n#### 1204")
    assert variants["calculator error"].text.startswith("He has 2*600 = <<2*600=1201>>1200.")
    assert "answer with commas" not in {path.kind for path in gsm8k_variants(Problem("p", "q", "#### 12", "12"))}
    large = {p.kind: p.text for p in gsm8k_variants(Problem("p", "q", "<<2*600000=1200000>>\n#### 1200000", "1200000"))}
    assert large["calculator error"] == "<<2*600000=1200001>>\n#### 1200000"  # not 1.2e+06, which would check
    assert large["wrong answer"].endswith("#### 1200001")
    assert len(gsm8k_corpus([GOLD] * 3, 2, seed=0)) == 2 * len(variants)


def test_checker_rates_count_false_positives_and_negatives_exactly():
    corpus = gsm8k_variants(GOLD)  # 5 sound, 2 unsound
    paper = checker_rates(corpus, "paper", True)
    # the paper's extractor misses "$1203" and "The answer is 1203."; the calculator check rejects the broken one
    assert (paper["accepted"], paper["false_positives"], paper["false_negatives"]) == (3, 0, 2)
    assert paper["false_positive_rate"] == 0 and paper["false_negative_rate"] == 2 / 5 and paper["precision"] == 1
    answer = checker_rates(corpus, "paper", False)
    assert (answer["false_positives"], answer["false_positive_rate"], answer["precision"]) == (1, 1 / 2, 3 / 4)
    assert answer["accepted_by_kind"] == {"answer as decimal": 1, "answer in words": 0, "answer with $": 0,
                                          "answer with commas": 1, "calculator error": 1, "gold": 1,
                                          "wrong answer": 0}  # fmt: skip
    only_unsound = checker_rates([Labelled("#### 1", "2", False, "wrong answer")], "paper", True)
    assert only_unsound["false_negative_rate"] is None and only_unsound["precision"] is None


def test_math_verify_reads_restated_answers_that_the_papers_extractor_misses():
    result = rates({"gsm8k": gsm8k_variants(GOLD)}, ["math-verify+calculator"])["corpora"]["gsm8k"]
    row = result["checkers"]["math-verify+calculator"]
    assert (result["sound"], result["unsound"]) == (5, 2)
    assert row["accepted_by_kind"]["answer with $"] == 1 and row["accepted_by_kind"]["answer in words"] == 1
    assert row["false_positives"] == 0 and row["verifier_timeouts"] == 0
    with pytest.raises(ValueError, match="unknown checker"):
        rates({}, ["sympy"])
    assert tuple(CHECKERS) == CHECKER_NAMES  # the command line's copy of the names


def test_checkers_command_writes_the_rates_and_names_a_missing_input(world, tmp_path, capsys):
    problem = world_problems(world)[0]["train-0003"]
    samples = write_lines(tmp_path / "s.jsonl", [{"id": "train-0003", "response": distinct_solutions(problem)[0]},
                                                 {"id": "train-0003", "response": "#### 0"}])  # fmt: skip
    gsm8k = write_lines(tmp_path / "g.jsonl", [{"query": GOLD.query, "response": GOLD.response}])
    out = tmp_path / "rates.json"
    command = ["checkers", "--world", str(world), "--samples", str(samples), "--gsm8k", str(gsm8k),
               "--checkers", "answer", "paper", "--out", str(out)]  # fmt: skip
    assert main(command) == 0
    result = json.loads(out.read_text())
    assert result["format"] == "rftlab.checker-rates/1"
    assert result["corpora"]["toy"]["checkers"]["paper"]["false_negative_rate"] == 0
    assert result["corpora"]["gsm8k"]["checkers"]["paper"]["false_negatives"] == 2
    assert "paper" in capsys.readouterr().out
    assert main(["checkers", "--world", str(world)]) == 2
    assert "--world and --samples: give both" in capsys.readouterr().err
    assert main(["checkers"]) == 2
    assert "give at least one corpus" in capsys.readouterr().err
