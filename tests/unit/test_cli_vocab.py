"""One vocabulary across the CLIs: old spellings warn and still work, errors name the typed flag, docs list every flag."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from sim.clivocab import VocabParser, name_flags, typed_options
from sim.stragglers import parse_stragglers

ROOT = Path(__file__).resolve().parents[2]

#: (old spelling, new spelling) of `python -m sim run` and `whatif`.
SIM_ALIASES = [("--B", "--batch-size"), ("--stragglers", "--straggler"), ("--delay-global", "--global-sync-delay"),
               ("--delay-block", "--block-sync-delay"), ("--compression", "--compress"),
               ("--warmup", "--local-warmup"), ("--warmup-steps", "--local-warmup-steps")]
CONVEX_ALIASES = [("--B", "--batch-size"), ("--sampling", "--sampler"), ("--gamma-cap", "--lr-cap")]


def _sub(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, tuple[str, ...]]:
    """{option string: its old spellings} of a parser's visible options (help left out)."""
    return {s: getattr(a, "old_spellings", ()) for a in parser._actions if a.option_strings and a.dest != "help"
            for s in a.option_strings if s not in getattr(a, "old_spellings", ())}


def _section(doc: str, heading: str) -> str:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _named(section: str, flag: str) -> bool:
    return re.search(r"`" + re.escape(flag) + r"[` ]", section) is not None


# --- the docs cannot drift from the parsers ---------------------------------------------------------------------

def test_readme_train_table_lists_every_train_flag():
    from train.cli import build_parser
    run = _sub(build_parser(), "run")
    section = _section("README-train.md", "## All flags of `python -m train run`")
    flags = list(_options(run))
    assert len(flags) > 60  # the parser was read, not an empty list
    missing = [f for f in flags if not _named(section, f)]
    assert not missing, f"docs/README-train.md's flag table lacks {missing}"


def test_readme_sim_names_every_sim_run_flag_and_old_spelling():
    from sim.cli import build_parser
    run = _sub(build_parser(), "run")
    section = _section("README-sim.md", "All flags of `sim run`")
    opts = _options(run)
    missing = [f for f in opts if not _named(section, f)]
    missing += [o for olds in opts.values() for o in olds if not _named(section, o)]
    assert not missing, f"docs/README-sim.md's sim run table lacks {missing}"


def test_train_help_is_grouped_by_topic_and_every_run_flag_has_a_topic():
    from train.cli import _TOPICS, build_parser
    run = _sub(build_parser(), "run")
    titles = [g.title for g in run._action_groups]
    assert [t for t, _ in _TOPICS] == [t for t in titles if t in dict(_TOPICS)]
    ungrouped = [s for a in run._optionals._group_actions for s in a.option_strings if s not in ("-h", "--help")]
    assert not ungrouped, f"add {ungrouped} to a topic of train.cli._TOPICS"
    text = run.format_help()
    assert text.index("model & data:") < text.index("  --width") < text.index("algorithm & schedule:") \
        < text.index("  --Hb") < text.index("prediction:") < text.index("  --predict-load")


def test_sim_run_help_is_grouped_like_train():
    from sim.cli import build_parser
    run = _sub(build_parser(), "run")
    ungrouped = [s for a in run._optionals._group_actions for s in a.option_strings if s not in ("-h", "--help")]
    assert not ungrouped, f"add {ungrouped} to a topic of sim.cli._RUN_TOPICS"
    text = run.format_help()
    assert text.index("communication & slow-downs:") < text.index("  --global-sync-delay") < text.index("output:")


def test_old_spellings_are_hidden_from_help():
    from sim.cli import build_parser
    text = _sub(build_parser(), "run").format_help()
    for old, new in SIM_ALIASES:
        assert re.search(re.escape(new) + r"\b", text)
        assert not re.search(re.escape(old) + r"(?![\w-])", text), old
    conv = _sub(build_parser(), "convex", "grid").format_help()
    assert "--lr-cap" in conv and "--gamma-cap" not in conv and "--sampling" not in conv


def test_same_name_for_the_same_thing_in_train_and_sim():
    """Every sim/convex flag that means a trainer option is spelled as the trainer spells it."""
    from sim.cli import build_parser as sim_parser
    from train.cli import build_parser as train_parser
    train = set(_options(_sub(train_parser(), "run")))
    for path in (("run",), ("whatif",), ("cost",), ("convex", "grid"), ("convex", "speedup")):
        opts = _options(_sub(sim_parser(), *path))
        for old, new in SIM_ALIASES + CONVEX_ALIASES:
            if old in {o for olds in opts.values() for o in olds}:
                assert new in opts and new in train, (path, new)
        assert not {"--B", "--stragglers", "--delay-global", "--compression", "--warmup"} & set(opts), path


# --- old spellings: still work, one warning line ----------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "value", "key", "expected"), [
    ("--B", "--batch-size", "64", "B", 64),
    ("--stragglers", "--straggler", "fixed:1:2", "stragglers", {"kind": "fixed", "rank": 1, "slowdown": 2.0}),
    ("--delay-global", "--global-sync-delay", "0.5", "delay_s", None),
    ("--delay-block", "--block-sync-delay", "0.25", "delay_s", None),
    ("--compression", "--compress", "sign", "compression", "sign"),
    ("--warmup", "--local-warmup", "linear", "warmup", "linear"),
    ("--warmup-steps", "--local-warmup-steps", "8", "warmup_steps", 8),
])
def test_sim_old_spelling_works_like_the_new_and_warns_once(capsys, old, new, value, key, expected):
    from sim.cli import main
    base = ["run", "--K", "4", "--epochs", "0.1", "--json", "--algorithm", "hierarchical", "--H", "2", "--Hb", "2"]
    results = {}
    for flag in (old, new):
        assert main([*base, flag, value]) == 0
        out, err = capsys.readouterr()
        results[flag] = json.loads(out)
        warnings = [line for line in err.splitlines() if "deprecated" in line]
        assert warnings == ([f"warning: {old} is deprecated; use {new}"] if flag == old else [])
    res = results[old]
    assert res == {**results[new], "sim_seconds": res["sim_seconds"]}
    if isinstance(expected, dict):
        assert {k: res[key][k] for k in expected} == expected
    elif expected is not None:
        assert res[key] == expected
    else:
        assert res[key] > 0  # the delay is charged


def test_old_spelling_warns_once_when_repeated(capsys):
    from sim.cli import main
    assert main(["cost", "--K", "4", "--servers", "2", "--N", "64", "--B", "4", "--B", "8", "--H", "1",
                 "--C1", "1", "--C2", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["B"] == 8
    assert err.count("warning: --B is deprecated; use --batch-size") == 1


@pytest.mark.parametrize(("old", "new", "value", "dest", "expected"), [
    ("--B", "--batch-size", "4,16", "B", [4, 16]),
    ("--sampling", "--sampler", "shuffle", "sampling", "shuffle"),
    ("--gamma-cap", "--lr-cap", "8", "gamma_cap", 8.0),
])
def test_convex_old_spelling_parses_like_the_new_and_warns(capsys, old, new, value, dest, expected):
    from sim.cli import build_parser
    for flag in (old, new):
        ns = build_parser().parse_args(["convex", "grid", "--data", "x", flag, value])
        assert getattr(ns, dest) == expected
        err = capsys.readouterr().err
        assert (f"warning: {old} is deprecated; use {new}" in err) == (flag == old)


def test_train_straggler_form_is_accepted_by_the_simulator():
    assert parse_stragglers("3:2").to_json() == parse_stragglers("fixed:3:2").to_json()


def test_train_model_name_is_accepted_by_the_simulator():
    from sim.compute import get_model
    assert get_model("wideresnet28-10") is get_model("wrn28-10")


def test_trainer_parser_warns_on_launch_rank_zero_only(monkeypatch, capsys):
    from train.launch import RankZeroParser
    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("PMI_RANK", rank)
        monkeypatch.setenv("PMI_SIZE", "2")
        p = RankZeroParser(prog="t")
        p.add_argument("--batch-size", old=("--B",), dest="B", type=int)
        assert p.parse_args(["--B", "3"]).B == 3
        assert capsys.readouterr().err.count("warning: --B is deprecated; use --batch-size") == lines


# --- errors name the flag the user typed ------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "value", "needle"), [
    (("--B", "--batch-size"), "0", "{} must be an integer >= 1, got 0"),
    (("--delay-global", "--global-sync-delay"), "-1", "{} must be a finite number >= 0"),
    (("--delay-block", "--block-sync-delay"), "-1", "{} must be a finite number >= 0"),
    (("--stragglers", "--straggler"), "fixed:99:2", "{} rank must be < K=16"),
    (("--stragglers", "--straggler"), "slow", "{} must be 'none'"),
    (("--warmup-steps", "--local-warmup-steps"), "-2", "{} must be an integer >= 0"),
    (("--compression", "--compress"), "bogus", "argument {}: invalid choice: 'bogus'"),
    (("--warmup", "--local-warmup"), "bogus", "argument {}: invalid choice: 'bogus'"),
])
def test_sim_error_names_the_spelling_typed(capsys, flags, value, needle):
    from sim.cli import main
    for flag in flags:
        try:
            code = main(["run", flag, value])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        assert code == 2
        err = capsys.readouterr().err
        other = flags[1] if flag == flags[0] else flags[0]
        error = next(line for line in err.splitlines() if "error:" in line)
        assert needle.format(flag) in error, err
        assert not re.search(re.escape(other) + r"(?![\w-])", error), error  # the typed spelling only


@pytest.mark.parametrize(("argv", "needle"), [
    (["--batch-size", "0"], "error: --batch-size must be an integer >= 1, got 0"),
    (["--algorithm", "local", "--H", "0"], "error: --H must be an integer >= 1, got 0"),
    (["--lr", "-1"], "error: --lr must be a finite number > 0"),
    (["--switch-epoch", "5", "--epochs", "4"],
     ("error: --switch-epoch 5 is not before --epochs 4: the run would end before post-local SGD starts; lower "
     "--switch-epoch or raise --epochs")),
    (["--global-sync-delay", "-1"], "error: --global-sync-delay must be a finite number >= 0"),
    (["--local-warmup", "bogus"], "error: --local-warmup must be one of"),
    (["--straggler", "5:2"], "error: --straggler rank must be < the number of ranks 1, got 5"),
    (["--batch-size", "x"], "error: argument --batch-size: invalid int value: 'x'"),
])
def test_train_error_names_the_flag_not_the_field(capsys, monkeypatch, argv, needle):
    from train.cli import main
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert "_" not in err.split(":")[1].split()[0]  # no snake_case field name as the subject


def test_train_calibrate_error_names_the_flag(capsys, tmp_path):
    from train.cli import main
    assert main(["calibrate", "--out", str(tmp_path / "m.json"), "--batch-size", "0"]) == 2
    assert "error: --batch-size must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_name_flags_leaves_quoted_values_and_longer_names_alone():
    typed = {"lr": "--lr", "model": "--model", "stragglers": "--stragglers"}
    msg = "model 'model' with lr 2 and lr_cap 3 (--lr given); straggler rank 5"
    assert name_flags(msg, typed, {"straggler": "stragglers"}) == \
        "--model 'model' with --lr 2 and lr_cap 3 (--lr given); --stragglers rank 5"
    assert name_flags(msg, {}) == msg  # nothing typed: the message is unchanged


def test_vocab_parser_records_typed_option_strings_through_subparsers():
    p = VocabParser(prog="x")
    sub = p.add_subparsers(dest="cmd")
    run = sub.add_parser("run")
    run.add_argument("--batch-size", old=("--B",), dest="B", type=int, default=1)
    run.add_argument("--quiet", action="store_true")
    ns = p.parse_args(["run", "--B", "2", "--quiet"])
    assert ns.B == 2 and typed_options(ns) == {"B": "--B", "quiet": "--quiet"}
    assert typed_options(p.parse_args(["run"])) == {}
