"""Data readers: TSV/CSV/JSONL, malformed rows named by file and line, bucketed batches."""

from __future__ import annotations

import json

import pytest

from albert_edge.data import DataError, Encoded, TaskConfig, batch_indices, pad_batch, read_examples, read_file


def task(tmp_path, **kw) -> TaskConfig:
    return TaskConfig(name="t", data_dir=str(tmp_path), **kw)


def test_sst2_default_reads_shared_files():
    ex = read_examples(TaskConfig(max_eval_rows=10), "eval")
    assert len(ex) == 10 and set(ex.labels) <= {0, 1}
    full = read_examples(TaskConfig(), "eval")
    assert len(full) == 872 and sum(full.labels) == 444


def test_tsv_bad_row_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood \t1\nno label here\nbad \t0\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: 1 fields where the header has 2"):
        read_file(task(tmp_path), "train")
    ex = read_file(task(tmp_path, on_bad_row="skip"), "train")
    assert ex.labels == [1, 0] and ex.skipped == 1


def test_label_out_of_range(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood \t7\n")
    with pytest.raises(DataError, match=r"train\.tsv:2: label 7 outside 0\.\.1"):
        read_file(task(tmp_path), "train")


def test_csv_with_pairs(tmp_path):
    (tmp_path / "train.csv").write_text('q,a,y\n"is it, really",yes,1\nno,"not, at all",0\n')
    ex = read_file(task(tmp_path, train_file="train.csv", text_column="q", text_pair_column="a", label_column="y"), "train")
    assert ex.texts == ["is it, really", "no"] and ex.pairs == ["yes", "not, at all"] and ex.labels == [1, 0]


def test_jsonl_bad_json(tmp_path):
    rows = [json.dumps({"text": "fine", "label": 1}), "{oops", json.dumps({"text": "ok", "label": 0})]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    t = task(tmp_path, train_file="train.jsonl", text_column="text")
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid JSON"):
        read_file(t, "train")
    (tmp_path / "train.jsonl").write_text("\n".join([rows[0], rows[2]]) + "\n")
    assert read_file(t, "train").labels == [1, 0]


def test_missing_column_is_named(tmp_path):
    (tmp_path / "train.tsv").write_text("text\tlabel\nhi \t1\n")
    with pytest.raises(DataError, match="no column 'sentence'"):
        read_file(task(tmp_path), "train")


def test_bucketed_batches_cover_everything_once_and_pad_little():
    lengths = [5, 50, 6, 49, 7, 48, 8, 47] * 10
    batches = batch_indices(lengths, 8, shuffle=True, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    naive = sum(max(lengths[i] for i in range(s, s + 8)) * 8 - sum(lengths[s : s + 8]) for s in range(0, len(lengths), 8))
    assert waste < naive / 4


def test_pad_batch_dynamic_width():
    enc = Encoded([[2, 5, 3], [2, 3]], [[0, 0, 0], [0, 0]], [1, 0])
    b = pad_batch(enc, [0, 1])
    assert b["input_ids"].shape == (2, 3)
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert pad_batch(enc, [1], pad_to=8)["input_ids"].shape == (1, 8)
