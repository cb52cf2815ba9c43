import json
import random
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rftlab.answers import extract_gsm8k
from rftlab.calculator import annotations, check_equation, equation_key
from rftlab.data import PROMPT_TEMPLATES
from rftlab.toyworld import (
    NAMES,
    Derivation,
    Distractor,
    Strategy,
    ToyProblem,
    WorldConfig,
    count_distinct_solutions,
    distinct_solutions,
    generate_problem,
    generate_split,
    generate_validation,
    make_split,
    pretraining_corpus,
    split_of,
    write_toyworld,
)

INTEGER_EQUATION = re.compile(r"\d+(?:[-+*]\d+)+=\d+")
# Ann 7, Bob = Ann + 3, Cy = Bob * 2: one derivation order (Cy needs Bob).
NAMES3 = ("Ann", "Bob", "Cy")
CHAIN = ToyProblem(NAMES3, (7, 10, 20), (None, Derivation(0, "+", 3), Derivation(1, "*", 2)), "total", 0, "apples")
# Ann 7, Bob = Ann + 3, Cy = Ann * 2: two derivation orders.
FORK = replace(CHAIN, values=(7, 10, 14), definitions=(None, Derivation(0, "+", 3), Derivation(0, "*", 2)))
configs = st.builds(
    WorldConfig,
    people=st.sampled_from([(2,), (3,), (4,), (2, 3, 3, 4)]),
    max_leaf=st.integers(2, 20),
    distractors=st.integers(0, 2),
    surface=st.sampled_from(["terse", "verbose"]),
    canonical=st.booleans(),
)


def assert_correct(solution: str, answer: int) -> None:
    """Every annotation is integer + - * arithmetic that checks, and `#### answer` ends the solution."""
    found = annotations(solution)
    assert found
    assert all(INTEGER_EQUATION.fullmatch(equation) and check_equation(equation) for equation in found), found
    assert extract_gsm8k(solution) == str(answer)
    assert solution.endswith(f"\n#### {answer}")


def test_terse_and_verbose_text_of_a_known_problem():
    assert CHAIN.question() == "Ann has 7. Bob has 3 more than Ann. Cy has 2 times as many as Bob. How many in all?"
    assert CHAIN.solution() == "Bob=<<7+3=10>>10\nCy=<<10*2=20>>20\nTotal=<<7+10+20=37>>37\n#### 37"
    assert CHAIN.question("verbose") == (
        "Ann has 7 apples. Bob has 3 more apples than Ann. Cy has twice as many apples as Bob. "
        "How many apples do they have altogether?"
    )
    assert CHAIN.solution(surface="verbose") == (
        "Bob has 7+3=<<7+3=10>>10 apples.\nCy has 10*2=<<10*2=20>>20 apples.\n"
        "Altogether they have 7+10+20=<<7+10+20=37>>37 apples.\n#### 37"
    )
    cost = replace(CHAIN, kind="cost", price=2)
    assert cost.question().endswith("Bob. Each costs 2. What is the total cost?")
    assert (cost.answer, cost.steps, CHAIN.answer, CHAIN.steps) == (74, 4, 37, 3)
    priced_each = cost.solution(Strategy((1, 2), (2, 0, 1), chain=True, distribute=True))
    assert priced_each == (
        "Bob=<<7+3=10>>10\nCy=<<10*2=20>>20\nCy cost=<<20*2=40>>40\nAnn cost=<<7*2=14>>14\nBob cost=<<10*2=20>>20\n"
        "Sum=<<40+14=54>>54\nCost=<<54+20=74>>74\n#### 74"
    )
    assert_correct(cost.solution(Strategy((1, 2), (2, 0, 1), chain=True, distribute=True), "verbose"), 74)


def test_a_strategy_must_respect_dependencies_and_cover_everyone():
    with pytest.raises(ValueError, match="not a strategy"):
        CHAIN.solution(Strategy((2, 1), (0, 1, 2)))
    with pytest.raises(ValueError, match="not a strategy"):
        CHAIN.solution(Strategy((1, 2), (0, 1)))
    assert FORK.solution(Strategy((2, 1), (0, 1, 2))).startswith("Cy=<<7*2=14>>14\nBob=<<7+3=10>>10\n")


def test_unknown_surface_and_bad_config_are_value_errors():
    with pytest.raises(ValueError, match="surface"):
        CHAIN.question("fancy")
    with pytest.raises(ValueError, match="surface"):
        WorldConfig(surface="fancy")
    with pytest.raises(ValueError, match="people"):
        WorldConfig(people=(1, 2))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), config=configs)
def test_gold_solutions_check_and_give_the_answer(seed, config):
    rng = random.Random(seed)
    problem = generate_problem(rng, config)
    assert problem.answer == sum(problem.values) * (problem.price if problem.kind == "cost" else 1)
    for surface in ("terse", "verbose"):
        assert_correct(problem.solution(rng, surface), problem.answer)
        canonical = problem.solution(None, surface)
        assert_correct(canonical, problem.answer)
        assert len(annotations(canonical)) == problem.steps
    terse_lines = problem.solution(rng).split("\n")
    assert all(re.fullmatch(r"[A-Za-z ]+=<<([^>]*)>>(\d+)", line) for line in terse_lines[:-1]), terse_lines
    assert all(line.endswith(">>" + line.split("=")[-1].split(">>")[0]) for line in terse_lines[:-1])


def test_generator_keeps_to_the_world_rules():
    config = WorldConfig()
    rng = random.Random(3)
    problems = [generate_problem(rng, config) for _ in range(2000)]
    for problem in problems:
        assert len(problem.names) in config.people and len(set(problem.names)) == len(problem.names)
        assert set(problem.names) <= set(NAMES)
        assert problem.definitions[0] is None
        for person, (value, definition) in enumerate(zip(problem.values, problem.definitions, strict=True)):
            if definition is None:
                assert 2 <= value <= 12
                continue
            assert definition.source < person and value >= 1
            assert value == definition.apply(problem.values[definition.source])
            if definition.op == "*":
                assert definition.k in (2, 3) and problem.values[definition.source] <= 15
            else:
                assert 1 <= definition.k <= 9
        assert (problem.kind == "cost") == (problem.price in (2, 3))
    cost_share = sum(problem.kind == "cost" for problem in problems) / len(problems)
    given_share = sum(d is None for p in problems for d in p.definitions[1:]) / sum(len(p.names) - 1 for p in problems)
    assert 0.26 < cost_share < 0.34 and 0.29 < given_share < 0.37


def test_distractors_are_stated_but_not_used():
    rng = random.Random(5)
    problems = [generate_problem(rng, WorldConfig(distractors=2)) for _ in range(300)]
    noisy = [p for p in problems if p.distractors]
    assert 150 < len(noisy) < 250  # 0, 1 or 2 each
    for problem in noisy:
        question = problem.question()
        assert f"How many {problem.item} in all?" in question or f"Each {problem.item[:-1]} costs" in question
        for distractor in problem.distractors:
            assert distractor.item != problem.item
            assert f"{distractor.name} has {distractor.count} {distractor.item}" in question
        assert problem.answer == sum(problem.values) * (problem.price or 1)
        assert_correct(problem.solution(rng), problem.answer)
    quiet = ToyProblem(("Ann", "Bob"), (3, 4), (None, None), "total", 0, "pens")
    noisy_one = replace(quiet, distractors=(Distractor(1, "Eve", 5, "cards"),))
    assert quiet.question() == "Ann has 3. Bob has 4. How many in all?"
    assert noisy_one.question() == "Ann has 3 pens. Eve has 5 cards. Bob has 4 pens. How many pens in all?"


def test_solver_counts_known_problems():
    # CHAIN: 3! operand orders x (n-ary sum or pairwise chain); with cost, x (sum then price or price each).
    assert count_distinct_solutions(CHAIN) == 12
    assert count_distinct_solutions(replace(CHAIN, kind="cost", price=3)) == 24
    assert count_distinct_solutions(FORK) == 24  # two derivation orders
    # Equal counts make permutations coincide: 5+5 is one equation list.
    assert count_distinct_solutions(ToyProblem(("Ann", "Bob"), (5, 5), (None, None), "total", 0, "eggs")) == 1
    assert count_distinct_solutions(ToyProblem(("Ann", "Bob"), (5, 6), (None, None), "total", 0, "eggs")) == 2
    twins = ToyProblem(NAMES3, (4, 6, 6), (None, Derivation(0, "+", 2), Derivation(0, "+", 2)), "total", 0, "eggs")
    assert count_distinct_solutions(twins) == 1 * 3 * 2  # one derivation list; orders of {4, 6, 6}: 3, each 2 forms
    assert len(distinct_solutions(CHAIN, limit=5)) == 5


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), config=configs)
def test_solver_solutions_are_correct_distinct_and_include_gold(seed, config):
    rng = random.Random(seed)
    problem = generate_problem(rng, config)
    solutions = distinct_solutions(problem, config.surface)
    keys = [equation_key(solution) for solution in solutions]
    assert len(solutions) == count_distinct_solutions(problem)
    assert None not in keys and len(set(keys)) == len(keys)
    for solution in solutions:
        assert_correct(solution, problem.answer)
    assert solutions[0] == problem.solution(None, config.surface)
    assert {equation_key(problem.solution(rng, config.surface)) for _ in range(10)} <= set(keys)
    other_surface = "verbose" if config.surface == "terse" else "terse"
    assert [equation_key(solution) for solution in distinct_solutions(problem, other_surface)] == keys


def test_four_people_have_many_paths_and_draws_reach_them():
    rng = random.Random(11)
    problems = [generate_problem(rng, WorldConfig(people=(4,))) for _ in range(100)]
    counts = [count_distinct_solutions(problem) for problem in problems]
    assert min(counts) >= 2 and sum(counts) / len(counts) > 48
    two_people = [count_distinct_solutions(generate_problem(rng, WorldConfig(people=(2,)))) for _ in range(100)]
    assert max(two_people) <= 4
    drawn = [len({equation_key(problem.solution(rng)) for _ in range(40)}) for problem in problems[:20]]
    assert sum(drawn) / len(drawn) > 15
    assert all(len({equation_key(problem.solution()) for _ in range(5)}) == 1 for problem in problems)


def test_split_is_reproducible_disjoint_and_without_duplicates():
    config = WorldConfig()
    train, test = make_split(600, 90, 7, config)
    assert (len(train), len(test)) == (600, 90)
    assert make_split(600, 90, 7, config) == (train, test)
    assert make_split(600, 90, 8, config)[0] != train
    queries = [record["query"] for record in train + test]
    assert len(set(queries)) == len(queries)
    assert [record["id"] for record in train[:2] + test[-1:]] == ["train-0001", "train-0002", "test-0090"]
    train_problems, test_problems = generate_split(600, 90, 7, config)
    assert not {p.structure_key for p in train_problems} & {p.structure_key for p in test_problems}
    assert {split_of(p) for p in train_problems} == {"train"} and {split_of(p) for p in test_problems} == {"test"}
    for record, problem in zip(train, train_problems, strict=True):
        assert record["query"] == problem.question()
        assert (record["steps"], record["kind"], record["people"]) == (problem.steps, problem.kind, len(problem.names))
        assert_correct(record["response"], problem.answer)


def test_canonical_mode_changes_only_the_solutions():
    diverse = make_split(300, 40, 2, WorldConfig())
    canonical = make_split(300, 40, 2, WorldConfig(canonical=True))
    verbose = make_split(300, 40, 2, WorldConfig(surface="verbose"))
    problems = generate_split(300, 40, 2, WorldConfig())
    for records, canon, talk, group in zip(diverse, canonical, verbose, problems, strict=True):
        assert [r["query"] for r in records] == [r["query"] for r in canon] == [p.question() for p in group]
        assert [r["query"] for r in talk] == [p.question("verbose") for p in group]
        assert [equation_key(r["response"]) for r in canon] == [equation_key(p.solution()) for p in group]
        pairs = zip(records, canon, strict=True)
        differ = sum(equation_key(r["response"]) != equation_key(c["response"]) for r, c in pairs)
        assert differ > 0.6 * len(records)
        for record, problem in zip(talk, group, strict=True):
            assert_correct(record["response"], problem.answer)


def test_an_exhausted_world_is_a_value_error():
    with pytest.raises(ValueError, match="too few distinct problems"):
        generate_split(300, 10, 0, WorldConfig(people=(2,), max_leaf=2, given_share=1.0))  # 270 questions


def test_pretraining_corpus_keeps_off_excluded_questions():
    config = WorldConfig()
    train, test = make_split(300, 40, 0, config)
    exclude = {record["query"] for record in train + test}
    docs = pretraining_corpus(0, config, exclude, 1500)
    assert len(docs) == 1500 and docs == pretraining_corpus(0, config, exclude, 1500)
    assert not any(query in doc for doc in docs for query in exclude)
    assert all("\n\n" not in doc and doc.strip() == doc for doc in docs)
    drills = [doc for doc in docs if doc.startswith("<<")]
    solved = [doc for doc in docs if doc.startswith("Q: ")]
    statements = [doc for doc in docs if doc[0].isalpha() and not doc.startswith("Q: ")]
    assert len(drills) + len(solved) + len(statements) == len(docs)
    assert 0.15 < len(drills) / len(docs) < 0.25 and 0.25 < len(statements) / len(docs) < 0.35
    for doc in drills:
        for line in doc.split("\n"):
            equation, result = re.fullmatch(r"<<([^>]*)>>(\d+)", line).groups()
            assert INTEGER_EQUATION.fullmatch(equation) and check_equation(equation)
            assert equation.endswith("=" + result)
    families = {"single": 0, "difference": 0}
    for doc in solved:
        query, solution = doc[len("Q: ") :].split("\nA: ")
        assert doc == PROMPT_TEMPLATES["compact"].format(query=query) + solution
        families["difference" if "How many more" in query else "single"] += 1
        assert re.search(r"How many (more )?does \w+ have( than \w+)?\?$", query)
        answer = int(extract_gsm8k(solution))
        assert_correct(solution, answer)
        assert answer > 0 and solution.split("\n")[-2].endswith(f">>{answer}")
    assert min(families.values()) > 0.3 * len(solved)
    # The check works: excluding the statements a corpus would contain removes them.
    statements_set = set(statements)
    assert not statements_set & set(pretraining_corpus(0, config, statements_set, 1500))


def test_solved_task_questions_join_the_corpus_without_changing_the_rest():
    config = WorldConfig()
    train, test = make_split(300, 40, 0, config)
    exclude = {record["query"] for record in train + test}
    plain, mixed = pretraining_corpus(0, config, exclude, 600), pretraining_corpus(0, config, exclude, 600, 200)
    assert mixed == pretraining_corpus(0, config, exclude, 600, 200) and len(mixed) == 800
    added = [doc for doc in mixed if doc.startswith("Q: ") and ("in all?" in doc or "total cost?" in doc)]
    assert len(added) == 200 and [doc for doc in mixed if doc not in added] == plain  # inserted, order kept
    assert not any(doc.startswith("Q: ") and doc[3:].split("\nA: ")[0] in exclude for doc in added)
    solutions = [doc.split("\nA: ")[1] for doc in added]
    for solution in solutions:
        assert_correct(solution, int(extract_gsm8k(solution)))
    assert mixed[-200:] != added and mixed[:200] != added  # spread through the corpus


def test_write_toyworld_reproduces_files(tmp_path):
    first = write_toyworld(tmp_path / "a", n_train=300, n_test=40, seed=3, corpus_docs=400)
    write_toyworld(tmp_path / "b", n_train=300, n_test=40, seed=3, corpus_docs=400)
    write_toyworld(tmp_path / "c", n_train=300, n_test=40, seed=4, corpus_docs=400)
    names = ["train.jsonl", "test.jsonl", "pretrain.txt", "toyworld.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in names[:3]:
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    train = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert train == make_split(300, 40, 3, WorldConfig())[0]
    test = [json.loads(line) for line in (tmp_path / "a" / "test.jsonl").read_text().splitlines()]
    corpus = (tmp_path / "a" / "pretrain.txt").read_text()
    exclude = {record["query"] for record in train + test}
    assert corpus.endswith("\n") and corpus[:-1].split("\n\n") == pretraining_corpus(3, WorldConfig(), exclude, 400)
    meta = json.loads((tmp_path / "a" / "toyworld.json").read_text())
    assert meta["format"] == "rftlab.toyworld/1" and meta["seed"] == 3 and meta["config"]["people"] == [2, 3]
    counts = (first["train"], first["test"], first["pretrain_docs"], first["pretrain_chars"])
    assert counts == (300, 40, 400, len(corpus))
    assert abs(sum(first["share_by_steps"].values()) - 1) < 0.01
    by_people = first["mean_distinct_solutions_by_people"]
    assert 1 <= by_people["2"] <= 4 < by_people["3"] and set(by_people) == {"2", "3"}


def test_validation_split_is_held_out_of_train_test_and_corpus_and_leaves_them_unchanged(tmp_path):
    plain = write_toyworld(tmp_path / "plain", n_train=300, n_test=40, seed=3, corpus_docs=400)
    held = write_toyworld(tmp_path / "held", n_train=300, n_test=40, seed=3, corpus_docs=400, n_valid=60)
    assert "valid" not in plain and held["valid"] == 60 and not (tmp_path / "plain" / "valid.jsonl").exists()

    def read(folder, name):
        return [json.loads(line) for line in (tmp_path / folder / name).read_text().splitlines()]

    for name in ("train.jsonl", "test.jsonl"):
        assert read("plain", name) == read("held", name)  # train and test do not depend on the validation split
    valid = read("held", "valid.jsonl")
    assert [r["id"] for r in valid] == [f"valid-{n:04d}" for n in range(1, 61)]
    questions = {r["query"] for r in valid}
    assert len(questions) == 60 and not questions & {r["query"] for name in ("train.jsonl", "test.jsonl")
                                                     for r in read("held", name)}  # fmt: skip
    corpus = (tmp_path / "held" / "pretrain.txt").read_text()
    assert not any(question in corpus for question in questions)
    assert all(split_of(problem) == "train" for problem in generate_validation(60, 3, WorldConfig(), set()))
