"""The runner: cache reuse, --from/--force, SIGKILL mid-stage, tampered artifacts, CLI exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from albert_edge.cli import main
from tests.conftest import TWO_STEP_TEMPLATE, run_yaml, write_yaml

TWO_STEP = TWO_STEP_TEMPLATE.replace("SLOW", "6")


def statuses(result) -> list[str]:
    return [s.status for s in result.steps]


def test_rerun_reuses_and_from_rebuilds(tmp_path):
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP.replace("epochs: 6", "epochs: 1"))
    cache = tmp_path / "cache"
    first = run_yaml(y, "two", cache)
    assert first.exit_code == 0 and statuses(first) == ["built", "built"]
    again = run_yaml(y, "two", cache)
    assert statuses(again) == ["reused", "reused"]
    assert again.steps[1].artifact.key == first.steps[1].artifact.key
    partial = run_yaml(y, "two", cache, from_step="slow")
    assert statuses(partial) == ["reused", "built"]
    forced = run_yaml(y, "two", cache, force=True)
    assert statuses(forced) == ["built", "built"]
    replaced = cache / "artifacts" / "replaced"
    assert len(list(replaced.iterdir())) == 3  # superseded artifacts are kept aside, not deleted
    assert main(["clean", "--cache-dir", str(cache)]) == 0 and not replaced.exists()
    manifest = json.loads((forced.steps[1].artifact.path / "manifest.json").read_text())
    assert manifest["inputs"]["model"] == forced.steps[0].artifact.key
    assert manifest["seed"] == 3 and "torch" in manifest["libraries"]
    assert all(len(h) == 64 for h in manifest["files"].values())


def test_config_change_rebuilds_only_downstream(tmp_path):
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP.replace("epochs: 6", "epochs: 1"))
    cache = tmp_path / "cache"
    run_yaml(y, "two", cache)
    y2 = write_yaml(tmp_path / "p2.yaml", TWO_STEP.replace("epochs: 6", "epochs: 1").replace("lr: 1.0e-4", "lr: 2.0e-4"))
    res = run_yaml(y2, "two", cache)
    assert statuses(res) == ["reused", "built"]


def test_tampered_artifact_is_detected_and_rebuilt(tmp_path):
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP.replace("epochs: 6", "epochs: 1"))
    cache = tmp_path / "cache"
    first = run_yaml(y, "two", cache)
    weights = first.steps[0].artifact.path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    again = run_yaml(y, "two", cache)
    assert statuses(again)[0] == "built"
    log = (again.run_dir / "run.log").read_text()
    assert "model/model.safetensors no longer matches its sha256" in log
    assert any((cache / "artifacts" / "corrupt").iterdir())  # kept aside, not used, not deleted


def test_sigkill_mid_stage_resumes_there(tmp_path):
    # long enough that the kill 1 s after "running" lands mid-build on any machine
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP_TEMPLATE.replace("SLOW", "40"))
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "albert_edge", "run", str(y), "-p", "two", "--cache-dir", str(cache)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    deadline = time.time() + 120
    seen = ""
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen += line
        if "slow: running" in line or not line:
            break
    time.sleep(1.0)  # well inside the slow stage
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert "slow: running" in seen, seen
    arts = cache / "artifacts"
    assert any(p.name.startswith("teacher-") for p in arts.iterdir())
    assert not any(p.name.startswith("slow-") for p in arts.iterdir())  # nothing half-written in place
    assert any((arts / "tmp").iterdir())  # the in-flight stage's temp dir
    res = run_yaml(y, "two", cache)
    assert statuses(res) == ["reused", "built"]
    assert "half-written" in (res.run_dir / "run.log").read_text()


def test_cli_exit_codes(tmp_path, capsys):
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP)
    assert main(["validate", str(y)]) == 0
    assert main(["run", str(y), "-p", "nope", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "no such pipeline" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert main(["run", str(y), "-p", "two", "--from", "nosuchstep", "--cache-dir", str(tmp_path / "c")]) == 2
    bad = write_yaml(tmp_path / "bad.yaml", TWO_STEP.replace("epochs: 1,", "epochs: x,"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pipelines.two.stages[0].finetune.train.epochs" in err and "Traceback" not in err


def test_cli_help_teaches(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("run", "validate", "list", "show", "clean", "examples:", "Exit codes"):
        assert word in out


def test_stage_failure_is_clean_and_keeps_earlier_work(tmp_path):
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP.replace("epochs: 6", "epochs: 1"))
    cache = tmp_path / "cache"
    run_yaml(y, "two", cache)
    # break the data after validation: the evaluate data read fails with file:line
    bad_dir = tmp_path / "data"
    bad_dir.mkdir()
    (bad_dir / "train.tsv").write_text("sentence\tlabel\ngood movie \t1\nbad row without label\n")
    (bad_dir / "dev.tsv").write_text("sentence\tlabel\nfine \t1\n")
    y2 = write_yaml(tmp_path / "p2.yaml", TWO_STEP.replace("max_seq_len: 48}", f"max_seq_len: 48, data_dir: {bad_dir}}}"))
    res = run_yaml(y2, "two", cache)
    assert res.exit_code == 2  # bad data is bad input, like a bad config
    assert "train.tsv:3" in res.error and "fields" in res.error
    assert Path(res.run_dir / "summary.json").is_file()
