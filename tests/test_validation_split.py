"""The held-out validation split: carved from train deterministically, never trained on, and
the rows every choice is made on; the eval file is only reported."""

from __future__ import annotations

import pytest

from albert_edge.data import DataError, TaskConfig, read_examples, validation_split


def test_split_is_deterministic_disjoint_and_keeps_duplicates_out_of_train():
    texts = [f"t{i % 500}" for i in range(1000)]  # every text twice
    val, train = validation_split(texts, 100)
    assert (val, train) == validation_split(texts, 100)
    assert len(val) == 100 and not set(val) & set(train)
    held = {texts[i] for i in val}
    assert not any(texts[i] in held for i in train)  # the twin of a validation row is not trained on
    assert len(train) == 1000 - 2 * len(held)


def test_default_size_and_too_large_a_split():
    texts = [str(i) for i in range(300)]
    assert len(validation_split(texts, None)[0]) == 30  # 10 % below 20,000 rows
    assert len(validation_split([str(i) for i in range(50_000)], None)[0]) == 2000
    with pytest.raises(DataError, match="more than half"):
        validation_split(texts, 151)


def test_read_examples_serves_three_splits():
    task = TaskConfig(max_train_rows=400, max_eval_rows=50, validation_rows=40)
    train, val, ev = (read_examples(task, s) for s in ("train", "validation", "eval"))
    assert len(val) == 40 and len(ev) == 50 and len(train) <= 360
    assert not set(val.texts) & set(train.texts)
    assert val.texts == read_examples(task, "validation").texts
