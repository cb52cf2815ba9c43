import json
import os

import pytest

from conftest import write_lines
from rftlab.data import DataError, atomic_folder, atomic_writer, iter_samples, read_problems, write_jsonl


def test_reads_both_key_conventions_and_default_ids(tmp_path):
    path = write_lines(
        tmp_path / "p.jsonl",
        [
            {"query": "q0", "response": "r <<1+1=2>>2\n#### 2"},
            {"question": "q1", "answer": "#### 1,600"},
            {"query": "q2", "response": "#### -3.5", "id": "custom"},
            {"query": "q3", "response": "#### 4", "id": 17},
        ],
    )
    problems = read_problems(path)
    assert [(p.id, p.query, p.answer) for p in problems] == [
        ("0", "q0", "2"),
        ("1", "q1", "1600"),
        ("custom", "q2", "-3.5"),
        ("17", "q3", "4"),
    ]
    assert problems[1].response == "#### 1,600"


def test_default_id_is_the_zero_based_line_number(tmp_path):
    path = write_lines(
        tmp_path / "p.jsonl", [{"query": "a", "response": "#### 1"}, "", {"query": "b", "response": "#### 2"}]
    )
    assert [p.id for p in read_problems(path)] == ["0", "2"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "q", "response": "#### 1"', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"query": "q"}', "missing field 'response'"),
        ('{"question": "q"}', "missing field 'answer'"),
        ('{"response": "#### 1"}', "missing field 'query'"),
        ('{"query": "q", "response": 5}', "field 'response' must be a string"),
        ('{"query": "q", "response": "#### abc"}', "gold answer"),
        ('{"query": "q", "response": "no marker"}', "gold answer"),
        ('{"query": "q", "response": "#### 1", "id": [1]}', "field 'id'"),
        ('{"query": "q", "response": "#### 1", "id": "0"}', "duplicate problem id '0'"),
    ],
)
def test_bad_problem_lines_name_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "p.jsonl", [{"query": "ok", "response": "#### 1"}, "", line])
    with pytest.raises(DataError, match=message) as caught:
        read_problems(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert (caught.value.path, caught.value.line) == (str(path), 3)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_problems(tmp_path / "absent.jsonl")


def test_samples_keep_file_order_and_locate_errors(tmp_path):
    path = write_lines(
        tmp_path / "s.jsonl",
        [{"id": "1", "response": "a", "model": "m", "seed": 3}, {"id": 0, "response": "b"}, {"response": "c"}],
    )
    samples = iter_samples(path)
    assert [(s.id, s.response, s.model, s.line) for s in (next(samples), next(samples))] == [
        ("1", "a", "m", 1),
        ("0", "b", None, 2),
    ]
    with pytest.raises(DataError, match=r"s\.jsonl:3: missing field 'id'"):
        next(samples)


def test_atomic_writer_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_write_jsonl_round_trips(tmp_path):
    records = [{"a": 1, "text": "é\n"}, {"b": [1, 2]}]
    target = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(target, iter(records)) == 2
    assert [json.loads(line) for line in target.read_text().splitlines()] == records


def test_atomic_writes_honour_the_umask_without_changing_it(tmp_path):
    import os
    import stat

    from rftlab.data import atomic_writer

    previous = os.umask(0o027)
    try:
        with atomic_writer(tmp_path / "f.txt", "w") as handle:
            handle.write("x")
        assert os.umask(0o027) == 0o027  # unchanged by the write
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_an_atomic_folder_replaces_a_folder_whole_and_a_failure_leaves_it_as_it_was(tmp_path):
    target = tmp_path / "world"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "new.txt").write_text("half")
        raise RuntimeError("killed part-way")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_folder(target) as folder:
        (folder / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["world"]
