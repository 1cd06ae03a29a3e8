"""Bad files and contradictory options: a truncated metrics file, a corrupt LIBSVM file, impossible flags."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.faults.helpers import PY, one_error_line, train
from tests.parallel.harness import REPO, mpi_env


def _cut_last_line(path: Path) -> None:
    text = path.read_bytes()
    path.write_bytes(text[: text.rstrip(b"\n").rfind(b"\n") + 30])  # 29 bytes into the last record


def _analysis(*argv: str) -> tuple[int, list[str]]:
    proc = subprocess.run([PY, "-m", "analysis", *argv], cwd=REPO, env=mpi_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ln.strip()]


def test_truncated_metrics_file_is_never_plotted_short(reference: Path, tmp_path: Path) -> None:
    """analysis on a metrics.jsonl cut mid-line: a warning naming the torn line, and an error rather than a plot
    with fewer epochs than summary.json says ran; a stopped run (no such claim) is plotted with the warning."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    metrics = run / "metrics.jsonl"
    n_lines = len(metrics.read_text().splitlines())
    _cut_last_line(metrics)
    code, err = _analysis("curves", str(run), "--out-dir", str(tmp_path / "fig"), "--quiet")
    assert code == 2 and len(err) == 2, err
    assert err[0] == (f"WARNING: {metrics}:{n_lines}: torn last line ignored (invalid JSON (Unterminated string "
                      f"starting at)); the {n_lines - 1} records before it are kept") or \
        (err[0].startswith(f"WARNING: {metrics}:{n_lines}: torn last line ignored") and "records before it" in err[0])
    assert err[1] == (f"error: {run}: metrics.jsonl ends before the run did (last epoch record at step 31, "
                      f"summary.json says 48 steps were done): the file was cut; plotting it would drop epochs "
                      f"(restore it, or re-run the training)"), err
    assert not (tmp_path / "fig").exists()
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "interrupted"
    (run / "summary.json").write_text(json.dumps(summary))
    code, err = _analysis("curves", str(run), "--out-dir", str(tmp_path / "fig"), "--quiet", "--formats", "png")
    assert code == 0 and len(err) == 1 and "torn last line ignored" in err[0], err
    assert (tmp_path / "fig" / "curves.png").is_file() or list((tmp_path / "fig").glob("*.png"))


def test_metrics_with_a_bad_middle_line_is_an_error_naming_it(reference: Path, tmp_path: Path, capsys) -> None:
    from analysis.cli import main
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"
    (run / "metrics.jsonl").write_text("".join(lines))
    assert main(["curves", str(run), "--out-dir", str(tmp_path / "fig"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / 'metrics.jsonl'}:4: invalid JSON"), err


def test_corrupt_libsvm_file_is_one_line_from_rank_0(tmp_path: Path) -> None:
    """A label 2 in w8a (the trainer used to take it as class 1): one line naming file, line and value, exit 2."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "w8a").write_text("-1 3:1 7:1\n+1 1:1\n2 4:1\n-1 2:1\n" * 4)
    proc = train(["--model", "logreg-binary", "--dataset", "w8a", "--data-dir", str(data), "--batch-size", "2",
                  "--epochs", "1", "--quiet", "--out-dir", str(tmp_path / "run")])
    assert proc.returncode == 2
    assert one_error_line(proc) == f"error: {data / 'w8a'}:3: label must be one of -1, +1, got '2'"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--switch-epoch", "1000", "--epochs", "2"],
     "--switch-epoch 1000 is not before --epochs 2: the run would end before post-local SGD starts"),
    (["--algorithm", "minibatch", "--H", "16"], "--H 16 does not apply to --algorithm minibatch"),
    (["--algorithm", "local", "--Hb", "4"], "--Hb must be 1 unless --algorithm is hierarchical, got --Hb=4 with local"),
    (["--stop-at-epoch", "5", "--epochs", "2"], "--stop-at-epoch 5 is not before --epochs 2"),
    (["--momentum-variant", "local", "--global-momentum", "0.5"],
     "--global-momentum 0.5 does not apply to --momentum-variant local"),
    (["--sign-scale", "2"], "--sign-scale 2.0 only applies to --compress sign, got --compress none"),
])
def test_contradictory_options_are_one_line_naming_both(flags: list[str], message: str, tmp_path: Path,
                                                         capsys) -> None:
    from train.cli import main
    assert main([*flags, "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not (tmp_path / "run").exists()


def test_switch_step_beyond_the_run_is_refused() -> None:
    """Found once the data sets the number of steps (the ranks then agree on it: one line, exit 2)."""
    from train.config import TrainConfig
    from train.errors import TrainError
    from train.plan import RunPlan
    cfg = TrainConfig(algorithm="postlocal", switch_step=1000, epochs=2, batch_size=8)
    with pytest.raises(TrainError, match=r"^switch_step 1000 is not before the run's 64 steps \(epochs 2\)"):
        RunPlan.build(cfg, workers=2, n_train=512)
    assert RunPlan.build(TrainConfig(algorithm="postlocal", switch_step=63, epochs=2, batch_size=8), workers=2,
                         n_train=512).switch_step == 63
