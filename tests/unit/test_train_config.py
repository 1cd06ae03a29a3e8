"""Configuration validation: every bad value gives a one-line TrainError that names it; the CLI maps flags."""
from __future__ import annotations

import pytest

from train.cli import build_parser, config_from_args, format_summary, main
from train.config import TrainConfig, parse_straggler
from train.errors import TrainError


def test_train_defaults_are_valid() -> None:
    cfg = TrainConfig()
    assert (cfg.algorithm, cfg.model, cfg.dataset) == ("postlocal", "resnet8", "synthetic")
    assert cfg.to_dict()["lr_decay_at"] == [0.5, 0.75]


@pytest.mark.parametrize("kwargs, message", [
    ({"H": 0}, "H must be an integer >= 1, got 0"),
    ({"Hb": 2}, "Hb must be 1 unless algorithm is hierarchical, got Hb=2 with postlocal"),
    ({"algorithm": "sync"}, "algorithm must be one of minibatch, local, postlocal, hierarchical, got 'sync'"),
    ({"model": "resnet21"}, "got 'resnet21'"),
    ({"model": "wideresnet28"}, "got 'wideresnet28'"),
    ({"dataset": "mnist"}, "dataset must be one of synthetic, cifar10, cifar100, w8a, wikitext2, got 'mnist'"),
    ({"dataset": "cifar10"}, "dataset 'cifar10' needs --data-dir pointing at its files, got none"),
    ({"dataset": "wikitext2", "data_dir": "x"}, "model 'resnet8' does not fit dataset 'wikitext2'"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"epochs": 0}, "epochs must be a finite number > 0.0, got 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0.0, got nan"),
    ({"momentum": 1.5}, "momentum must be a finite number >= 0.0 and <= 0.999, got 1.5"),
    ({"lr_decay_at": (0.75, 0.5)}, "lr_decay_at must be increasing fractions strictly between 0 and 1, got [0.75, 0.5]"),
    ({"switch_step": 3, "algorithm": "local"}, "switch_step / switch_epoch only apply to algorithm postlocal, got local"),
    ({"switch_step": 3, "switch_epoch": 1.0}, "give at most one of switch_step and switch_epoch, got 3 and 1.0"),
    ({"local_warmup": "cosine"}, "local_warmup must be one of constant, linear, exponential, got 'cosine'"),
    ({"momentum_variant": "global", "algorithm": "minibatch"}, "momentum_variant must be local for minibatch"),
    ({"bn_eval": "rank1"}, "bn_eval must be one of average, rank0, got 'rank1'"),
    ({"global_sync_delay": -1.0}, "global_sync_delay must be a finite number >= 0.0, got -1.0"),
    ({"target_acc": 2.0}, "target_acc must be a finite number >= 0.0 and <= 1.0, got 2.0"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda, got 'tpu'"),
    ({"stragglers": ((1, 0.5),)}, "straggler must be (rank >= 0, factor >= 1), got (1, 0.5)"),
])
def test_train_bad_config_names_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(TrainError) as err:
        TrainConfig(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_train_world_checks() -> None:
    cfg = TrainConfig(algorithm="hierarchical", gpus_per_node=3, stragglers=((2, 2.0),))
    cfg.check_world(6)
    with pytest.raises(TrainError, match="gpus_per_node must divide the number of ranks 4, got 3"):
        cfg.check_world(4)
    with pytest.raises(TrainError, match="straggler rank must be < the number of ranks 2, got 2"):
        TrainConfig(stragglers=((2, 2.0),)).check_world(2)


def test_train_parse_straggler() -> None:
    assert parse_straggler("3:2.5") == (3, 2.5)
    for bad in ("3", "x:2", "3:0.5", "-1:2", "3:inf"):
        with pytest.raises(TrainError, match="straggler must be RANK:FACTOR"):
            parse_straggler(bad)


def test_train_cli_flags_map_to_config() -> None:
    p = build_parser()
    ns = p.parse_args(["run", "--algorithm", "hierarchical", "--H", "4", "--Hb", "2", "--gpus-per-node", "2",
                       "--lr-decay-at", "0.3,0.6,0.9", "--straggler", "1:3", "--straggler", "2:1.5",
                       "--no-nesterov", "--global-sync-delay", "0.5", "--local-warmup", "linear",
                       "--local-warmup-steps", "20"])
    cfg = config_from_args(ns)
    assert (cfg.algorithm, cfg.H, cfg.Hb, cfg.gpus_per_node) == ("hierarchical", 4, 2, 2)
    assert cfg.lr_decay_at == (0.3, 0.6, 0.9) and cfg.stragglers == ((1, 3.0), (2, 1.5))
    assert cfg.nesterov is False and cfg.global_sync_delay == 0.5
    assert (cfg.local_warmup, cfg.local_warmup_steps) == ("linear", 20)
    assert config_from_args(p.parse_args(["run"])) == TrainConfig()


def test_train_help_documents_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])                 # `python -m train --help` shows the flags of the default subcommand
    assert done.value.code == 0
    text = capsys.readouterr().out
    from dataclasses import fields
    for f in fields(TrainConfig):
        flag = "--straggler" if f.name == "stragglers" else "--no-nesterov" if f.name == "nesterov" else \
            "--" + f.name.replace("_", "-")
        assert flag in text, f"{flag} is not in --help"


def test_train_summary_table_shows_values() -> None:
    s = {"algorithm": "local", "model": "resnet8", "dataset": "synthetic", "world_size": 4, "status": "completed",
         "steps_done": 10, "total_steps": 10, "epochs_done": 2.0, "wall_s": 3.5, "samples_per_s": 91.4,
         "final": {"test_acc": 0.875, "test_loss": 0.4, "train_loss": 0.3}, "best_test_acc": 0.9,
         "totals_mean": {"compute_s": 1.25, "comm_s_global": 0.5, "comm_s_block": 0.0, "wait_s_global": 0.1,
                         "wait_s_block": 0.0},
         "syncs": {"global": 4, "block": 0}, "expected_syncs": {"global": 4, "block": 0}, "payload_bytes": 1000,
         "target_acc": 0.85, "time_to_target": {"wall_s": 2.25, "epoch": 1.5}, "run_dir": "runs/x"}
    table = format_summary(s)
    for needle in ("87.50 % / 90.00 %", "1.25 s", "4 / 0 (schedule: 4 / 0)", "1,000", "2.25 s (epoch 1.50)",
                   "time to 85.0 %"):
        assert needle in table
    assert "--resume" not in table
    stopped = format_summary({**s, "status": "interrupted", "signal": "SIGTERM", "steps_done": 6})
    assert "| interrupted by SIGTERM" in stopped and "mpirun -n 4 python -m train --resume runs/x" in stopped
    assert "predicted" not in table and table.splitlines()[-1].split()[:4] == ["next", "python", "-m", "analysis"]
    predicted = format_summary({**s, "prediction": {"wall_s": 4.2}})
    assert "predicted 4.20 s, measured 3.50 s (error +20.0 %)" in predicted
    gib = 1 << 30
    one_machine = {"peak_rss_bytes_sum": 4 * gib, "estimate_bytes": 5 * gib, "estimate_processes": 4}
    assert "4.0 GiB (sum over 4 ranks) (the guard estimated 5.0 GiB)" in format_summary({**s, "processes": 4, "memory": one_machine})
    two_nodes = {**one_machine, "estimate_bytes": 2 * gib, "estimate_processes": 2}  # 4 ranks over 2 machines
    assert "(the guard estimated 2.0 GiB for the 2 ranks of one machine)" in format_summary({**s, "processes": 4, "memory": two_nodes})
