"""Append-only JSON-lines files cut short by a kill (skyeye/jsonl.py): what is read, and where appending goes on."""

import json

import pytest

from skyeye import jsonl

ROWS = [{"id": 1, "answer": "a runway"}, {"id": 2, "answer": "école"}]


def _lines(rows) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


INSIDE_E = json.dumps(ROWS[1], ensure_ascii=False).encode().index("é".encode()) + 1  # between the bytes of "é"


@pytest.mark.parametrize("cut", [1, 9, INSIDE_E])
def test_an_unfinished_last_line_is_left_out_named_and_removed_before_appending(tmp_path, cut):
    path = tmp_path / "rows.jsonl"
    whole = _lines(ROWS)
    path.write_bytes(whole[: len(_lines(ROWS[:1])) + cut])  # cut inside the second row
    saved = jsonl.read(path)
    assert (saved.rows, saved.cut_line) == (ROWS[:1], 2)
    assert jsonl.settle(path) is True
    with path.open("a") as handle:
        handle.write(json.dumps(ROWS[1], ensure_ascii=False) + "\n")
    assert path.read_bytes() == whole


def test_a_last_row_cut_just_before_its_newline_is_kept_and_ended(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_lines(ROWS).rstrip(b"\n"))
    saved = jsonl.read(path)
    assert (saved.rows, saved.cut_line) == (ROWS, None)
    assert jsonl.settle(path) is False
    assert path.read_bytes() == _lines(ROWS)


def test_settling_a_whole_empty_or_missing_file_changes_nothing(tmp_path):
    whole, empty, missing = tmp_path / "whole.jsonl", tmp_path / "empty.jsonl", tmp_path / "missing.jsonl"
    whole.write_bytes(_lines(ROWS))
    empty.write_bytes(b"")
    assert [jsonl.settle(path) for path in (whole, empty, missing)] == [False, False, False]
    assert (whole.read_bytes(), empty.read_bytes(), missing.exists()) == (_lines(ROWS), b"", False)
    assert jsonl.read(missing).rows == []


def test_a_bad_line_that_a_kill_cannot_have_cut_is_an_error_naming_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": 1, "ans\n' + _lines(ROWS[1:]))
    with pytest.raises(ValueError, match=rf"^{path}:1: not valid JSON .*; delete the line to resume$"):
        jsonl.read(path)
    path.write_bytes(_lines(ROWS) + b'{"id": 3, "ans\n')  # ends with its newline: not a kill's cut either
    with pytest.raises(ValueError, match=rf"^{path}:3: not valid JSON"):
        jsonl.read(path)


def test_a_row_that_is_not_an_object_with_the_keys_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_lines(ROWS) + b"[1, 2]\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: not a row with id$"):
        jsonl.read(path, "a row with id", ("id",))
    path.write_bytes(_lines(ROWS) + b'{"answer": "trees"}\n')
    with pytest.raises(ValueError, match=rf"^{path}:3: not a row with id$"):
        jsonl.read(path, "a row with id", ("id",))
