"""`rftlab gsm8k`: GSM8K from a local JSONL folder, a hub-layout parquet snapshot, or a hub id (faked here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_lines
from rftlab.cli import main
from rftlab.data import DataError, read_problems
from rftlab.gsm8k import demo_splits, load_gsm8k, write_gsm8k

TRAIN = [
    {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5\n#### 5"},
    {"question": "A café sells 1,200 cups at $2. Revenue?", "answer": "1200*2=<<1200*2=2400>>2400\n#### 2,400"},
]
TEST = [{"question": "What is 7 - 9?", "answer": "7-9=<<7-9=-2>>-2\n#### -2"}]


def _as_query_response(rows: list[dict]) -> list[dict]:
    return [{"query": row["question"], "response": row["answer"]} for row in rows]


def write_parquet_snapshot(root: Path, splits: dict[str, list[dict]], config: str = "main") -> Path:
    """openai/gsm8k's layout: CONFIG/SPLIT-00000-of-00001.parquet with question and answer columns."""
    datasets = pytest.importorskip("datasets", reason="the hub-layout path reads parquet through datasets (test extra)")
    (root / config).mkdir(parents=True)
    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
    return root


def test_local_jsonl_folder_in_either_key_convention(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    write_lines(source / "train.jsonl", [*TRAIN[:1], "", {"id": 7, **_as_query_response(TRAIN[1:])[0]}])
    write_lines(source / "test.jsonl", TEST)
    counts = write_gsm8k(tmp_path / "out", load_gsm8k(source))
    assert counts == {"train": 2, "test": 1}
    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    assert lines == [json.dumps(row) for row in _as_query_response(TRAIN)]  # json.dumps: ASCII, ", " and ": "
    assert "caf\\u00e9" in lines[1]
    problems = read_problems(tmp_path / "out" / "train.jsonl")
    assert [(p.id, p.answer) for p in problems] == [("0", "5"), ("1", "2400")]  # ids: the 0-based row index


def test_hub_layout_parquet_snapshot_through_datasets(tmp_path):
    source = write_parquet_snapshot(tmp_path / "snapshot", {"train": TRAIN, "test": TEST})
    records = load_gsm8k(source, "main")
    assert records == {"train": _as_query_response(TRAIN), "test": _as_query_response(TEST)}


def test_missing_split_is_named(tmp_path):
    source = write_parquet_snapshot(tmp_path / "snapshot", {"train": TRAIN})
    with pytest.raises(DataError, match=r"main: missing split 'test' \(no test-\*\.parquet\)"):
        load_gsm8k(source)
    folder = tmp_path / "jsonl"
    folder.mkdir()
    write_lines(folder / "test.jsonl", TEST)
    with pytest.raises(DataError, match=r"train\.jsonl: missing split 'train'"):
        load_gsm8k(folder)


def test_bad_row_names_file_and_line_and_nothing_is_written(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    write_lines(source / "train.jsonl", TRAIN)
    write_lines(source / "test.jsonl", [*TEST, {"question": "No answer line?", "answer": "it is 4"}])
    out = tmp_path / "out"
    assert main(["gsm8k", "--out", str(out), "--source", str(source)]) == 2
    error = capsys.readouterr().err
    assert f"{source / 'test.jsonl'}:2: the gold answer ('#### N' in 'answer') is not a number" in error
    assert not out.exists()  # the train split was fine, but nothing is written before both are checked


def test_bad_parquet_row_is_located(tmp_path):
    source = write_parquet_snapshot(tmp_path / "snapshot", {"train": TRAIN, "test": [*TEST, {"question": "Q?"}]})
    with pytest.raises(DataError, match=r"test-00000-of-00001\.parquet:2: missing field 'answer'"):
        load_gsm8k(source)


def test_cli_exit_codes_on_bad_sources(tmp_path, capsys):
    assert main(["gsm8k", "--out", str(tmp_path / "out"), "--source", str(tmp_path / "absent")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["gsm8k", "--out", str(tmp_path / "out"), "--source", str(tmp_path / "empty")]) == 2
    assert "holds neither train.jsonl and test.jsonl nor main/train-*.parquet" in capsys.readouterr().err


def test_hub_id_goes_to_load_dataset_with_its_config(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets", reason="the hub path calls datasets.load_dataset (test extra)")
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.DatasetDict(
            {"train": datasets.Dataset.from_list(TRAIN), "test": datasets.Dataset.from_list(TEST)}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)  # no local folder called openai/gsm8k
    assert main(["gsm8k", "--out", "out", "--config", "socratic"]) == 0
    assert calls == [(("openai/gsm8k", "socratic"), {})]
    assert capsys.readouterr().out.splitlines() == ["out/train.jsonl: 2 problems", "out/test.jsonl: 1 problems"]
    assert [p.query for p in read_problems(tmp_path / "out" / "test.jsonl")] == [TEST[0]["question"]]

    only_test = datasets.DatasetDict({"test": datasets.Dataset.from_list(TEST)})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: only_test)
    with pytest.raises(DataError, match=r"someone/gsm8k\[main\]: missing split 'train' \(has test\)"):
        load_gsm8k("someone/gsm8k")


def test_output_matches_the_shared_gsm8k_copy_byte_for_byte(gsm8k_dir, tmp_path):
    """A hub-layout snapshot of the shared copy's problems (question/answer columns) gives back its exact files."""
    splits = {
        split: [
            {"question": row["query"], "answer": row["response"]}
            for row in map(json.loads, (gsm8k_dir / f"{split}.jsonl").read_text().splitlines())
        ]
        for split in ("train", "test")
    }
    source = write_parquet_snapshot(tmp_path / "snapshot", splits)
    out = tmp_path / "out"
    assert main(["gsm8k", "--out", str(out), "--source", str(source)]) == 0
    for split, count in (("train", 7473), ("test", 1319)):
        assert (out / f"{split}.jsonl").read_bytes() == (gsm8k_dir / f"{split}.jsonl").read_bytes()
        assert len(read_problems(out / f"{split}.jsonl")) == count


def test_demo_splits_draw_disjoint_train_and_validation_problems_by_seed_and_label_their_lines():
    records = {"train": [{"query": f"q{i}", "response": f"#### {i}"} for i in range(50)], "test": TEST * 3}
    splits = demo_splits(records, n_train=10, n_valid=5, n_test=0, seed=1)
    assert splits == demo_splits(records, n_train=10, n_valid=5, n_test=0, seed=1)
    assert splits["train"] != demo_splits(records, n_train=10, n_valid=5, n_test=0, seed=2)["train"]
    lines = {
        name: [int(problem["id"].removeprefix("train-")) for problem in splits[name]] for name in ("train", "valid")
    }
    assert len(lines["train"]) == 10 and len(lines["valid"]) == 5 and not set(lines["train"]) & set(lines["valid"])
    assert lines["train"] == sorted(lines["train"])
    assert [problem["query"] for problem in splits["valid"]] == [f"q{i}" for i in lines["valid"]]
    assert [problem["id"] for problem in splits["test"]] == ["test-0", "test-1", "test-2"]
    assert len(demo_splits(records, n_train=10, n_valid=5, n_test=2, seed=1)["test"]) == 2
    with pytest.raises(ValueError, match="cannot take 45 \\+ 10 from train"):
        demo_splits(records, n_train=45, n_valid=10, n_test=0, seed=1)
