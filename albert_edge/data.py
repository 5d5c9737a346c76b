"""Task data: GLUE-style TSV, CSV and JSONL files (or HF `datasets` names when online),
tokenised once, served as dynamically padded, length-bucketed batches."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from albert_edge.paths import shared_data_dir
from albert_edge.schema import require

EVAL_NPZ = "eval.npz"  # the tokenised eval set in a bundle, for devices without a tokenizer


class DataError(ValueError):
    """A data file problem, naming the file and line."""


@dataclass(frozen=True)
class TaskConfig:
    """Where the examples come from and how to read them."""

    name: str = "sst2"
    data_dir: str | None = None  # default for sst2: ../shared/data/sst2
    train_file: str = "train.tsv"
    eval_file: str = "dev.tsv"
    format: Literal["auto", "tsv", "csv", "jsonl"] = "auto"
    hf_dataset: str | None = None  # e.g. "glue/sst2" (needs the hub)
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    num_labels: int = 2
    label_names: tuple[str, ...] = ("negative", "positive")
    max_seq_len: int = 128
    max_train_rows: int | None = None
    max_eval_rows: int | None = None
    # Rows carved from train, never trained on, that make every choice (best checkpoint,
    # fallback, tuning, gates); the eval file is only reported. None: min(2000, 10 % of train).
    validation_rows: int | None = None
    on_bad_row: Literal["error", "skip"] = "error"

    def check(self) -> None:
        require(self.num_labels >= 2, "num_labels", "a classifier needs at least 2 labels")
        require(len(self.label_names) == self.num_labels, "label_names", f"{len(self.label_names)} names for {self.num_labels} labels")
        require(8 <= self.max_seq_len <= 4096, "max_seq_len", f"{self.max_seq_len} is outside 8..4096")
        for key in ("max_train_rows", "max_eval_rows", "validation_rows"):
            val = getattr(self, key)
            require(val is None or val > 0, key, f"{val} rows: give a positive count or leave it out")

    def resolved_dir(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir).expanduser().resolve()
        return shared_data_dir() / self.name

    def files(self) -> dict[str, Path]:
        if self.hf_dataset:
            return {}
        d = self.resolved_dir()
        return {"train": d / self.train_file, "eval": d / self.eval_file}


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    skipped: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("tsv", "csv", "jsonl"):
        return suffix
    if suffix == "json":
        return "jsonl"
    raise DataError(f"{path}: cannot tell the format from the extension; set task.format to tsv, csv or jsonl")


# A text-classification row is a sentence or two: a longer physical line is a broken file
# (a missing newline, a binary blob), reported as a bad row instead of being read into memory.
MAX_LINE_BYTES = 1 << 17  # csv's own default field limit


def _decoded_lines(fh: IO[bytes], problems: dict[int, str]) -> Iterator[str]:
    """The file's lines as text; a line that is not UTF-8 or is too long is recorded in
    `problems` (line number -> why) and given as an empty line, so a reader skips past it."""
    for lineno, line in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # drop the rest of the over-long line, a chunk at a time
            problems[lineno] = f"line longer than {MAX_LINE_BYTES} bytes"
            yield "\n"
            continue
        if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a UTF-8 byte-order mark (Excel, Notepad) is not part of the header
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as err:
            problems[lineno] = f"not UTF-8 (byte 0x{line[err.start]:02x} at column {err.start + 1})"
            yield "\n"


def _first_problem(problems: dict[int, str], first: int, last: int) -> str:
    """The recorded problem of any physical line in first..last (a row may span lines)."""
    return next((problems.pop(n) for n in range(first, last + 1) if n in problems), "")


def _rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """Yield (line number, row or None if unparsable, raw problem)."""
    problems: dict[int, str] = {}
    with path.open("rb") as fh:
        lines = _decoded_lines(fh, problems)
        if fmt == "jsonl":
            for lineno, line in enumerate(lines, start=1):
                if lineno in problems:
                    yield lineno, None, problems.pop(lineno)
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    yield lineno, None, f"not valid JSON ({err.msg})"
                    continue
                yield (lineno, row, "") if isinstance(row, dict) else (lineno, None, "not a JSON object")
            return
        # GLUE TSVs are not quoted: a sentence may hold a double quote.
        reader = csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",", quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: unreadable header ({err})") from None
        if 1 in problems:
            raise DataError(f"{path}:1: header: {problems[1]}")
        if header is None:
            return
        done = reader.line_num
        while True:
            try:
                row = next(reader)
                problem = _first_problem(problems, done + 1, reader.line_num)
            except StopIteration:
                return
            except csv.Error as err:  # e.g. a quoted field past csv's size limit: name where the row starts
                problem = _first_problem(problems, done + 1, reader.line_num) or f"unreadable row ({err})"
                yield done + 1, None, problem
                done = reader.line_num
                continue
            lineno, done = reader.line_num, reader.line_num
            if problem:
                yield lineno, None, problem
                continue
            if not row or row == [""]:
                continue
            if len(row) != len(header):
                yield lineno, None, f"{len(row)} fields where the header has {len(header)}"
                continue
            yield lineno, dict(zip(header, row)), ""


Split = Literal["train", "validation", "eval"]
VALIDATION_SEED = 20240917  # fixed, independent of the pipeline seed: every run and seed selects on the same rows


def read_examples(task: TaskConfig, split: Split) -> Examples:
    """One split. `train` and `validation` are the train file minus / only the held-out rows
    (`validation_split`); `eval` is the eval file, kept for reporting."""
    if split == "eval":
        return read_file(task, "eval")
    full = read_file(task, "train")
    val_idx, train_idx = validation_split(full.texts, task.validation_rows, full.source)
    keep = val_idx if split == "validation" else train_idx
    return Examples(
        [full.texts[i] for i in keep],
        None if full.pairs is None else [full.pairs[i] for i in keep],
        [full.labels[i] for i in keep],
        full.skipped,
        full.source,
    )


def validation_split(texts: list[str], rows: int | None, source: str = "train") -> tuple[list[int], list[int]]:
    """(validation indices, train indices), deterministic for the same rows. Rows whose text
    equals a validation row's are left out of train too, so no validation text is trained on."""
    n = len(texts)
    want = min(2000, max(1, n // 10)) if rows is None else rows
    if want > n // 2:
        raise DataError(f"{source}: task.validation_rows {want} would hold out more than half of the {n} train rows; "
                        f"use at most {n // 2}")
    order = random.Random(VALIDATION_SEED).sample(range(n), n)
    val_idx = sorted(order[:want])
    held = {texts[i] for i in val_idx}
    chosen = set(val_idx)
    train_idx = [i for i in range(n) if i not in chosen and texts[i] not in held]
    return val_idx, train_idx


def read_file(task: TaskConfig, split: Literal["train", "eval"]) -> Examples:
    """Every row of the train or eval file (the train file before the validation rows are
    carved out); malformed rows raise DataError (file:line) or are skipped and counted."""
    if task.hf_dataset:
        return _read_hf(task, split)
    path = task.files()[split]
    if not path.is_file():
        raise DataError(f"{path}: file not found (task.data_dir / task.{split}_file)")
    fmt = _format_of(path, task.format)
    limit = task.max_train_rows if split == "train" else task.max_eval_rows
    texts: list[str] = []
    pairs: list[str] | None = [] if task.text_pair_column else None
    labels: list[int] = []
    skipped = 0
    for lineno, row, problem in _rows(path, fmt):
        if row is not None:
            problem = _row_problem(row, task)
        if problem:
            if task.on_bad_row == "skip":
                skipped += 1
                continue
            raise DataError(f"{path}:{lineno}: {problem} (set task.on_bad_row: skip to skip such rows)")
        assert row is not None
        texts.append(str(row[task.text_column]).strip())
        if pairs is not None:
            pairs.append(str(row[task.text_pair_column]).strip())
        labels.append(int(row[task.label_column]))
        if limit and len(labels) >= limit:
            break
    if not labels:
        raise DataError(f"{path}: no usable rows")
    return Examples(texts, pairs, labels, skipped, str(path))


def _row_problem(row: dict[str, Any], task: TaskConfig) -> str:
    for col in (task.text_column, task.text_pair_column, task.label_column):
        if col and col not in row:
            return f"no column {col!r} (columns: {', '.join(map(str, row))})"
    text = row[task.text_column]
    if not isinstance(text, str) or not text.strip():
        return f"empty or non-text {task.text_column!r}"
    try:
        label = int(str(row[task.label_column]).strip())
    except ValueError:
        return f"label {row[task.label_column]!r} is not an integer"
    if not 0 <= label < task.num_labels:
        return f"label {label} outside 0..{task.num_labels - 1}"
    return ""


def _read_hf(task: TaskConfig, split: str) -> Examples:
    try:
        import datasets  # optional; needs the hub
    except ImportError as err:
        raise DataError("task.hf_dataset needs `pip install datasets` and network access") from err
    name, _, subset = task.hf_dataset.partition("/")  # type: ignore[union-attr]
    hf_split = "train" if split == "train" else "validation"
    ds = datasets.load_dataset(name, subset or None, split=hf_split)
    limit = task.max_train_rows if split == "train" else task.max_eval_rows
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    pairs = list(ds[task.text_pair_column]) if task.text_pair_column else None
    return Examples(list(ds[task.text_column]), pairs, [int(x) for x in ds[task.label_column]], 0, task.hf_dataset or "")


@dataclass(frozen=True)
class Encoded:
    """Tokenised examples, unpadded, plus labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]

    def subset(self, idx: list[int]) -> Encoded:
        return Encoded([self.input_ids[i] for i in idx], [self.token_type_ids[i] for i in idx], [self.labels[i] for i in idx])


def encode(tokenizer: Any, examples: Examples, max_seq_len: int) -> Encoded:
    enc = tokenizer(
        examples.texts,
        examples.pairs,
        truncation=True,
        max_length=max_seq_len,
        padding=False,
        return_token_type_ids=True,
    )
    tt = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return Encoded([list(x) for x in enc["input_ids"]], [list(x) for x in tt], list(examples.labels))


def pad_batch(encoded: Encoded, idx: list[int], pad_id: int = 0, pad_to: int | None = None) -> dict[str, Any]:
    """Numpy batch (int64) padded to the longest row, or to `pad_to`."""
    import numpy as np

    width = pad_to or max(len(encoded.input_ids[i]) for i in idx)
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    tt = np.zeros((len(idx), width), dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    for r, i in enumerate(idx):
        row = encoded.input_ids[i][:width]
        ids[r, : len(row)] = row
        tt[r, : len(row)] = encoded.token_type_ids[i][:width]
        mask[r, : len(row)] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": tt,
        "labels": np.asarray([encoded.labels[i] for i in idx], dtype=np.int64),
        "index": np.asarray(idx, dtype=np.int64),
    }


def batch_indices(lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0, bucket: bool = True) -> list[list[int]]:
    """Length-bucketed batches: sort within chunks of 50 batches so padding stays small,
    then shuffle the batch order (when shuffling) so training still sees a random order."""
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    if bucket:
        chunk = batch_size * 50
        order = [i for s in range(0, len(order), chunk) for i in sorted(order[s : s + chunk], key=lambda j: lengths[j])]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def encoded_to_npz(
    input_ids: list[list[int]], token_type_ids: list[list[int]], labels: list[int], path: Path, teacher_preds: list[int] | None = None
) -> Path:
    """The tokenised eval set as fixed arrays a numpy-only device can read (pad id 0, mask 0)."""
    import numpy as np

    n = len(input_ids)
    width = max(len(r) for r in input_ids)
    ids = np.zeros((n, width), dtype=np.int64)
    tt = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, row in enumerate(input_ids):
        ids[i, : len(row)] = row
        tt[i, : len(row)] = token_type_ids[i]
        mask[i, : len(row)] = 1
    arrays = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": tt,
        "lengths": np.asarray([len(r) for r in input_ids], dtype=np.int64),
        "labels": np.asarray(labels, dtype=np.int64),
    }
    if teacher_preds is not None and len(teacher_preds) == n:
        arrays["teacher_preds"] = np.asarray(teacher_preds, dtype=np.int64)
    np.savez(path, **arrays)
    return path
