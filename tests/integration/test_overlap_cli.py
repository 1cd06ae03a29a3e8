"""The trainer with overlapped syncs and DiLoCo's outer optimizer: a run paused while a sync is in flight resumes
bitwise equal to the uninterrupted run; the prediction of an overlapped run hides its delay."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.checkpoints import rank_states, same
from tests.parallel.harness import mpirun

TINY = ["-m", "train", "--model", "resnet8", "--width", "4", "--synthetic-train", "256", "--synthetic-test", "64",
        "--synthetic-size", "8", "--batch-size", "8", "--lr-warmup-epochs", "0.5", "--quiet", "--algorithm",
        "local", "--H", "3", "--overlap", "--overlap-steps", "2", "--outer-optimizer", "nesterov", "--epochs", "2"]


def test_overlap_pause_in_flight_resumes_bit_identical(tmp_path: Path, capsys) -> None:
    """16 steps per epoch and rank: the sync after step 14 is due after step 16, so the pause after step 15 saves
    it in flight; the resume starts its all-reduce again and ends where the uninterrupted run ends."""
    full, part = tmp_path / "full", tmp_path / "part"
    mpirun(2, [*TINY, "--out-dir", str(full)], timeout=120)
    mpirun(2, [*TINY, "--out-dir", str(part), "--stop-at-epoch", "1"], timeout=120)
    paused = rank_states(part, 2)
    assert paused[0]["step"] == 15 and paused[0]["sync"]["pending"]["due"] == 16
    from train.cli import main  # `train verify` in process: its own exit code and lines, no second torch import
    main(["verify", str(part)])
    mid = capsys.readouterr().out
    assert "an overlapped sync was in flight" in mid, mid
    mpirun(2, ["-m", "train", "--resume", str(part), "--quiet"], timeout=120)
    a, b = rank_states(full, 2), rank_states(part, 2)
    for r in range(2):
        assert a[r]["step"] == b[r]["step"] and a[r]["sync"]["pending"] is None
        for key in ("model", "opt"):
            assert same(a[r][key], b[r][key]), f"rank {r}: {key} differs after resume"
        assert same(a[r]["sync"]["anchor"], b[r]["sync"]["anchor"]) and same(a[r]["sync"]["outer"],
                                                                             b[r]["sync"]["outer"])
    assert main(["verify", str(part)]) == 0
    end = capsys.readouterr().out
    assert "bitwise identical" in end and "in flight" not in end, end
    s = json.loads((full / "summary.json").read_text())
    assert s["syncs"] == s["expected_syncs"] and s["totals_mean"]["inflight_s_global"] > 0
    assert s["totals_mean"]["wait_s_global"] < s["totals_mean"]["inflight_s_global"]  # one barrier: the last sync


@pytest.mark.parametrize("extra", [[], ["--overlap", "--overlap-steps", "4"]])
def test_predict_hides_the_delay_of_overlapped_syncs(extra: list[str], capsys) -> None:
    """On the paper's preset a 0.5 s delay per sync is waited for by blocking syncs and hidden behind 4 steps of
    0.17 s by overlapped ones. 25 steps: syncs after steps 3, 7, ..., 23 and the run's last, blocking, after step 24,
    which first drains the sync of step 23 after one step instead of four."""
    from train.cli import main
    args = ["--predict", "--predict-topology", "paper-8x2-10gbps", "--predict-workers", "16", "--model", "resnet20",
            "--width", "16", "--dataset", "cifar10", "--data-dir", "/nonexistent", "--batch-size", "128", "--epochs",
            "1", "--algorithm", "local", "--H", "4", "--global-sync-delay", "0.5", "--json", *extra]
    assert main(args) == 0
    p = json.loads(capsys.readouterr().out)
    syncs = p["syncs_global"]
    step = p["step_s"]
    assert p["total_steps"] == 25 and syncs == 7
    if extra:
        assert p["overlap_steps"] == 4 and p["hidden_s"] == pytest.approx(5 * 0.5 + step, rel=0.01)
        assert p["delay_s"] == pytest.approx(0.5 + (0.5 - step), rel=0.01)
        assert main([a for a in args if a != "--json"]) == 0  # the human table shows what was hidden
        hidden = [line for line in capsys.readouterr().out.splitlines() if "comm hidden" in line]
        assert len(hidden) == 1 and f"{p['hidden_s']:.3f} s" in hidden[0] and "tau=4" in hidden[0], hidden
    else:
        assert p["overlap_steps"] == 0 and p["hidden_s"] == 0 and p["delay_s"] == pytest.approx(syncs * 0.5)
