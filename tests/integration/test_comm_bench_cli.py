"""`python -m comm bench` as a user runs it: the table, the JSONL schema, and one-line errors with no output file."""
from __future__ import annotations

import json

from tests.parallel.harness import mpirun

KEYS = {"library", "p", "gpus_per_node", "bytes", "dtype", "algorithm", "t_median_s", "t_min_s", "t_max_s",
        "algbw_GBps", "busbw_GBps", "correct"}


def test_bench_writes_checked_rows(tmp_path):
    out = tmp_path / "bench.jsonl"
    res = mpirun(4, ["-m", "comm", "bench", "--sizes", "4K,100K", "--iters", "3", "--warmup", "1",
                     "--gpus-per-node", "2", "--out", str(out)], timeout=120)
    assert "busbw" in res.stdout and "WRONG" not in res.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * 7
    assert {r["algorithm"] for r in rows} == {"recursive_doubling", "rabenseifner", "ring", "rail", "native",
                                              "hierarchical", "auto"}
    for r in rows:
        # On one machine (one node) auto makes the single-node choice: recursive doubling for these short sizes.
        assert set(r) == (KEYS | {"auto_choice"} if r["algorithm"] == "auto" else KEYS), set(r)
        assert r.get("auto_choice", "recursive_doubling") == "recursive_doubling"
        assert r["correct"] is True and r["p"] == 4
        assert r["t_min_s"] <= r["t_median_s"] <= r["t_max_s"]
        assert abs(r["busbw_GBps"] - r["algbw_GBps"] * 2 * 3 / 4) < 1e-9
        assert r["library"] == ("mpi" if r["algorithm"] == "native" else "localsgd")
        assert r["gpus_per_node"] == (2 if r["algorithm"] == "hierarchical" else None)
    assert {r["bytes"] for r in rows} == {4096, 102400}


def test_bench_bad_input_one_line_error_and_no_file(tmp_path):
    out = tmp_path / "never.jsonl"
    for args, needle in ((["--algorithms", "tree"], "'tree'"), (["--sizes", "4Q"], "'4Q'"),
                         (["--gpus-per-node", "3"], "not divisible by --gpus-per-node 3"),
                         (["--iters", "ten"], "argument --iters: invalid int value: 'ten'"),
                         (["--bogus"], "unrecognized arguments: --bogus")):
        res = mpirun(4, ["-m", "comm", "bench", *args, "--out", str(out)], timeout=60, check=False)
        assert res.returncode != 0
        errors = [line for line in res.stdout.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], res.stdout[-2000:]
        assert "usage:" not in res.stdout  # one line, not a usage block from every rank
        assert not out.exists()
        # --algorithms is the old spelling of --allreduce: it still works and warns once (rank 0 only)
        assert res.stdout.count("warning: --algorithms is deprecated; use --allreduce") == (args[0] == "--algorithms")


def test_bench_help_is_printed_once():
    res = mpirun(3, ["-m", "comm", "bench", "--help"], timeout=60)
    assert res.stdout.count("usage: python -m comm bench") == 1


def test_bench_levels_tag_rows_for_the_two_level_fit(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "levels.jsonl"
    mpirun(4, ["-m", "comm", "bench", "--level", "both", "--gpus-per-node", "2", "--sizes", "1K,8K", "--iters", "2",
               "--warmup", "0", "--allreduce", "recursive_doubling,rabenseifner,ring", "--out", str(out)], timeout=120)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["level"] for r in rows] == ["intra"] * 6 + ["inter"] * 6
    assert all(r["p"] == 2 and r["nodes"] == 2 and r["ranks_per_node"] == 2 and r["correct"] for r in rows)
    res = subprocess.run([sys.executable, "-m", "sim", "calibrate", "--bench", str(out), "--json"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    levels = json.loads(res.stdout)["levels"]
    assert set(levels) == {"intra", "inter"} and all(v["rows"] == 6 and "r2" in v for v in levels.values())
    bad = mpirun(2, ["-m", "comm", "bench", "--level", "both", "--allreduce", "hierarchical"], timeout=60, check=False)
    errors = [line for line in bad.stdout.splitlines() if line.startswith("error:")]
    assert bad.returncode != 0 and len(errors) == 1 and "drop hierarchical" in errors[0]
