"""Hostile but fair input: each bad config, CLI argument or data file gives exit code 2 and one
line naming what is wrong (and the file:line where there is one), never a traceback, a
silent clamp, a path outside the cache, or minutes of work before the error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from albert_edge.cli import main
from albert_edge.data import DataError, TaskConfig, read_file
from benchmarks.devices.base import parse_spec

REPO = Path(__file__).resolve().parents[1]

BASE = """\
version: 1
defaults:
  seed: 1
  task: {{name: sst2, max_train_rows: 50, max_eval_rows: 20, max_seq_len: 64}}
pipelines:
  p:
    model: '{model}'
{extra}    stages:
{stages}"""
FINETUNE = "      - finetune: {train: {epochs: 1}}\n"


def config(model: str = "config:tiny", extra: str = "", stages: str = FINETUNE) -> str:
    return BASE.format(model=model, extra=extra, stages=stages)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# (probe id, file content, words the one-line error must hold)
CONFIG_PROBES = [
    ("non-utf8", b'version: 1\npipelines:\n  p:\n    description: "caf\xe9"\n', ["p.yaml:4", "not UTF-8"]),
    ("duplicate-key", config(extra="    seed: 1\n    seed: 2\n"), ["p.yaml:9", "duplicate key 'seed'", "line 8"]),
    ("version-banana", config().replace("version: 1", "version: banana"), ["p.yaml:1", "version", "'banana'"]),
    ("version-2", config().replace("version: 1", "version: 2"), ["version", "2 is not a supported version"]),
    ("no-pipelines", "version: 1\npipelines: {}\n", ["p.yaml:2", "no pipelines"]),
    ("set-list", config(extra="    set: [1]\n"), ["p.yaml:8", "pipelines.p.set", "expected a mapping"]),
    ("set-entry-list", config(extra="    set: {finetune: [1]}\n"), ["pipelines.p.set.finetune", "expected a mapping"]),
    (
        "inputs-list",
        config(stages="      - finetune: {id: a}\n      - evaluate: {inputs: [a]}\n"),
        ["p.yaml:10", "pipelines.p.stages[1].evaluate.inputs", "expected a mapping"],
    ),
    ("teacher-list", config(extra="    teacher: [a]\n"), ["pipelines.p.teacher", "is not a step id"]),
    ("finetune-list", config(stages="      - finetune: [1, 2]\n"), ["p.yaml:9", "pipelines.p.stages[0].finetune", "expected a mapping"]),
    ("drop-int", config(extra="    drop: 5\n"), ["pipelines.p.drop", "expected a list"]),
    ("append-int", config(extra="    append: 5\n"), ["pipelines.p.append", "expected a list"]),
    (
        "stages-mapping",
        config(stages="      {a: 1}\n").replace("    stages:\n      {a: 1}", "    stages: {a: 1}"),
        ["pipelines.p.stages", "expected a list"],
    ),
    ("description-list", config(extra="    description: [1]\n"), ["pipelines.p.description", "expected a string"]),
    (
        "pipeline-name-int",
        "version: 1\npipelines:\n  1:\n    model: config:tiny\n    stages: [evaluate]\n",
        ["p.yaml:3", "pipeline name 1 is not a string"],
    ),
    ("model-config-passwd", config(model="config:/etc/passwd"), ["p.yaml:7", "pipelines.p.model", "'/etc/passwd' is not JSON"]),
    ("model-config-base-list", config(model='config:{"base": [1]}'), ["pipelines.p.model", "base [1] is not a known config"]),
    (
        "model-config-size-string",
        config(model='config:{"hidden_size": "x"}'),
        ["pipelines.p.model", "hidden_size must be a positive integer"],
    ),
    ("step-id-dotdot", config(stages="      - finetune: {id: ../../../x}\n"), ["p.yaml:9", "step id '../../../x' is not a safe name"]),
    ("step-id-absolute", config(stages="      - finetune: {id: /tmp/x}\n"), ["step id '/tmp/x' is not a safe name"]),
    ("step-id-hidden", config(stages="      - finetune: {id: .x}\n"), ["step id '.x' is not a safe name"]),
    (
        "pipeline-name-dotdot",
        "version: 1\npipelines:\n  ../../x:\n    model: config:tiny\n    stages: [evaluate]\n",
        ["p.yaml:3", "pipeline name '../../x' is not a safe name"],
    ),
    (
        "prune-heads-100",
        config(stages="      - finetune\n      - prune: {heads: 100}\n"),
        ["p.yaml:10", "pipelines.p.stages[1].prune.heads", "removes 100 of the input model's 4 heads"],
    ),
    (
        "prune-heads-after-distill",
        config(
            stages="      - finetune\n      - distill: {student: {num_hidden_layers: 1, num_attention_heads: 2}}\n"
            "      - prune: {heads: 2}\n"
        ),
        ["prune.heads", "removes 2 of the input model's 2 heads"],
    ),
    ("prune-ffn-count", config(stages="      - finetune\n      - prune: {ffn: 128}\n"), ["prune.ffn", "128 FFN neurons"]),
    (
        "tflite-bucket-256",
        config(stages="      - finetune\n      - export_tflite: {buckets: [32, 256]}\n"),
        ["export_tflite.buckets", "bucket 256 is longer than task.max_seq_len 64"],
    ),
    ("first-step-needs-a-model", config(stages="      - evaluate\n"), ["pipelines.p.stages[0].evaluate", "needs a `model` artifact"]),
    ("data-dir-nul-byte", config(extra='    task: {data_dir: "a\\0b"}\n'), ["pipelines.p.task", "unusable data path"]),
    ("model-unknown-home", config(model="hf:~nosuchuser/x"), ["pipelines.p.model", "~nosuchuser/x"]),
    ("seed-too-big", config(extra="    seed: 99999999999999999999999\n"), ["pipelines.p.seed", "below 2**32"]),
    ("recursive-alias", config(extra="    description: &r [*r]\n"), ["p.yaml:8", "refers to itself"]),
    (
        "benchmark-ssh-port-0",
        config(stages="      - finetune\n      - benchmark: {devices: ['ssh://u@h:0']}\n"),
        ["benchmark.devices", "port 0 is outside 1..65535"],
    ),
]


@pytest.mark.parametrize("probe, content, words", CONFIG_PROBES, ids=[p[0] for p in CONFIG_PROBES])
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: str, content: str | bytes, words: list[str]
) -> None:
    path = tmp_path / "p.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["validate", str(path)]) == 2
    err = one_line_error(capsys)
    for word in words:
        assert word in err, (word, err)


def test_good_config_still_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = config(stages="      - finetune\n      - prune: {heads: 3, ffn: 0.5}\n      - export_tflite: {buckets: [32, 64]}\n")
    (tmp_path / "p.yaml").write_text("\ufeff" + ok)  # a BOM is fine
    assert main(["validate", str(tmp_path / "p.yaml")]) == 0
    # merge keys are not duplicates; the repo's own file stays valid
    (tmp_path / "m.yaml").write_text(
        ok.replace("defaults:\n  seed: 1\n", "defaults: &d\n  seed: 1\n")
        + "  q:\n    <<: *d\n    seed: 2\n    model: config:tiny\n    stages: [finetune]\n"
    )
    assert main(["validate", str(tmp_path / "m.yaml")]) == 0
    assert main(["validate", str(REPO / "pipelines.yaml")]) == 0


def _bomb(under: str) -> str:
    """The "billion laughs": nine levels of nine aliases, 9**9 strings once expanded."""
    levels = ["      - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"      - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "version: 1\npipelines:\n  p:\n    model: config:tiny\n    stages: [evaluate]\n" + f"    {under}:\n" + "\n".join(levels) + "\n"


@pytest.mark.parametrize("under", ["seed", "description"])
def test_billion_laughs_is_rejected_fast(tmp_path: Path, under: str) -> None:
    """In a child with a memory cap, so a regression cannot take the machine down with it."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(under))
    code = (
        "import resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from albert_edge.cli import main\n"
        "t = time.perf_counter(); rc = main(['validate', sys.argv[1]])\n"
        "print(f'seconds={time.perf_counter() - t:.3f}', file=sys.stderr); sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    err, seconds = proc.stderr.strip().splitlines()
    assert "bomb.yaml:" in err and "aliases are expanded" in err
    assert float(seconds.split("=")[1]) < 1.0


def test_huge_yaml_is_rejected_before_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\n# " + "x" * (2 << 20) + "\npipelines: {p: {model: 'config:tiny', stages: [evaluate]}}\n")
    t0 = time.perf_counter()
    assert main(["validate", str(path)]) == 2
    assert "larger than 1024 KiB" in one_line_error(capsys) and time.perf_counter() - t0 < 1.0


def test_safe_name() -> None:
    from albert_edge.schema import safe_name

    for good in ("teacher", "sst2-mobile", "a.b_c-1", "5"):
        assert safe_name(good) == good
    for bad in ("..", "../x", "/abs", "a/b", "a\\b", ".hidden", "", "a..b", "x" * 200, "a b", "é", 5, None):
        with pytest.raises(ValueError):
            safe_name(bad)


def test_ssh_port_out_of_range() -> None:
    for spec in ("ssh://u@h:0", "ssh://u@h:65536", "ssh://u@h:"):
        with pytest.raises(ValueError, match="port"):
            parse_spec(spec)
    assert parse_spec("ssh://u@h:2222").port == 2222 and parse_spec("ssh://u@h").port is None


# ------------------------------------------------------------------ CLI arguments


# (probe id, argv with {good} {file} {bundle} {results} {tmp} placeholders, words of the one-line error)
CLI_PROBES = [
    ("missing-pipeline-flag", ["run", "{good}"], "the following arguments are required: --pipeline"),
    ("unknown-flag", ["run", "{good}", "-p", "p", "--bogus"], "unrecognized arguments: --bogus"),
    ("no-command", [], "give a command"),
    ("device-no-action", ["device"], "give an action"),
    ("unsafe-pipeline-name", ["run", "{good}", "-p", "../x", "--cache-dir", "{tmp}/c"], "no such pipeline"),
    ("from-unknown-step", ["run", "{good}", "-p", "p", "--from", "nope", "--cache-dir", "{tmp}/c"], "no step 'nope'"),
    ("show-cache-dir-is-a-file", ["show", "{good}", "-p", "p", "--cache-dir", "{file}"], "is not a directory"),
    ("run-cache-dir-is-a-file", ["run", "{good}", "-p", "p", "--cache-dir", "{file}"], "is not a directory"),
    ("clean-cache-dir-is-a-file", ["clean", "--cache-dir", "{file}"], "is not a directory"),
    ("validate-a-directory", ["validate", "{tmp}"], "file not found"),
    ("list-bad-config", ["list", "{bad}"], "bad.yaml:10: pipelines.p.stages[1].prune.heads"),
    ("show-bad-config", ["show", "{bad}", "-p", "p"], "bad.yaml:10: pipelines.p.stages[1].prune.heads"),
    ("report-not-results", ["report", "{results}"], "not benchmark results"),
    ("bench-ssh-port-0", ["bench", "{bundle}", "--device", "ssh://u@h:0"], "port 0 is outside 1..65535"),
    ("bench-threads-0", ["bench", "{bundle}", "--threads", "0"], "bench.threads"),
    ("bench-runs-negative", ["bench", "{bundle}", "--runs", "-1"], "bench.runs"),
]


@pytest.mark.parametrize("probe, argv, words", CLI_PROBES, ids=[p[0] for p in CLI_PROBES])
def test_cli_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: str, argv: list[str], words: str
) -> None:
    good = tmp_path / "p.yaml"
    good.write_text(config(stages="      - finetune\n"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"")  # found as a bundle; bad options fail before it is read
    results = tmp_path / "results.jsonl"
    results.write_text("hello\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(config(stages="      - finetune\n      - prune: {heads: 100}\n"))
    names = {"good": good, "bad": bad, "file": a_file, "bundle": bundle, "results": results, "tmp": tmp_path}
    try:
        rc = main([a.format(**names) for a in argv])
    except SystemExit as exit_:  # argparse
        rc = exit_.code
    assert rc == 2
    err = one_line_error(capsys)
    assert words in err, err


def test_clean_all_refuses_a_directory_that_is_not_a_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    (home / "documents").mkdir(parents=True)
    assert main(["clean", "--all", "--cache-dir", str(home)]) == 2
    assert "does not look like an albert-edge cache" in one_line_error(capsys)
    assert (home / "documents").is_dir()
    cache = tmp_path / "cache"
    (cache / "artifacts").mkdir(parents=True)
    assert main(["clean", "--all", "--cache-dir", str(cache)]) == 0 and not cache.exists()


# ------------------------------------------------------------------ data files


def _task(tmp_path: Path, name: str, content: bytes, **kw: object) -> TaskConfig:
    (tmp_path / name).write_bytes(content)
    return TaskConfig(name="t", data_dir=str(tmp_path), train_file=name, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name, content, where, words",
    [
        ("u.tsv", b"sentence\tlabel\ngood\t1\nbad caf\xe9\t0\nok\t0\n", "u.tsv:3", "not UTF-8 (byte 0xe9"),
        ("long.tsv", b"sentence\tlabel\ngood\t1\n" + b"x" * (1 << 20) + b"\t0\nok\t0\n", "long.tsv:3", "longer than"),
        ("long.csv", b'sentence,label\ngood,1\n"' + b"x" * (1 << 20) + b'",0\nok,0\n', "long.csv:3", "longer than"),
        (
            "u.jsonl",
            b'{"sentence": "a", "label": 1}\n{"sentence": "caf\xe9", "label": 1}\n{"sentence": "b", "label": 0}\n',
            "u.jsonl:2",
            "not UTF-8",
        ),
    ],
)
def test_encoding_and_field_size_name_file_and_line_and_can_be_skipped(
    tmp_path: Path, name: str, content: bytes, where: str, words: str
) -> None:
    with pytest.raises(DataError) as info:
        read_file(_task(tmp_path, name, content), "train")
    assert where in str(info.value) and words in str(info.value)
    ex = read_file(_task(tmp_path, name, content, on_bad_row="skip"), "train")
    assert ex.skipped == 1 and len(ex) == 2


def test_bom_is_stripped(tmp_path: Path) -> None:
    ex = read_file(_task(tmp_path, "bom.tsv", b"\xef\xbb\xbfsentence\tlabel\ngood\t1\n"), "train")
    assert ex.texts == ["good"]


def test_data_error_inside_a_run_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Data is read by the stage, after validation: the runner's input-error path, not a stage failure (1)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_bytes(b"sentence\tlabel\nfine\t1\nbad caf\xe9\t0\n")
    (data / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        pipelines:
          p:
            model: config:tiny
            threads: 1
            task: {{name: sst2, data_dir: {data}, max_seq_len: 32}}
            stages: [finetune]
        """))
    assert main(["run", str(path), "-p", "p", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    (summary,) = (tmp_path / "cache" / "runs").glob("p-2*/summary.json")  # the console log may go to an earlier test's stderr
    error = json.loads(summary.read_text())["error"]
    assert "train.tsv:3: not UTF-8" in error and "on_bad_row: skip" in error and "\n" not in error


def test_hf_sources_load_safetensors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from albert_edge import models

    seen: dict[str, object] = {}
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(lambda *a, **k: "tok"))
    monkeypatch.setattr(
        transformers.AutoModelForSequenceClassification, "from_pretrained", staticmethod(lambda *a, **k: seen.update(k) or "model")
    )
    models.load_source("hf:some-org/some-model")
    assert seen.get("use_safetensors") is True


def test_prune_count_that_would_empty_a_layer_is_refused_on_real_scores() -> None:
    """The stage's own check, for what validation cannot know (global ranking, uneven layers)."""
    import torch

    from compress import structured as st

    four = [torch.ones(4), torch.ones(4)]
    assert "at most 3" in st.too_many(four, 4, False, "heads") and st.too_many(four, 3, False, "heads") == ""
    assert "at most 6" in st.too_many(four, 7, True, "heads") and st.too_many(four, 6, True, "heads") == ""
    assert st.too_many([torch.ones(2), torch.ones(4)], 2, False, "heads")  # the smaller layer decides
    assert st.too_many(four, 0.9, False, "heads") == ""  # a fraction is rounded, and select keeps one back
