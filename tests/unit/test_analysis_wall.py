"""`analysis wall`: wall time against H, one line per topology, drawn in minutes from sim records only."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import pytest

from analysis.cli import main
from analysis.errors import InputError
from analysis.render import RenderConfig
from analysis.simout import load_sim
from analysis.wallplot import plot_wall


def _rec(topology: str, H: int, wall: float) -> dict:
    return {"schema": "sim.run/1", "topology": topology, "K": 16, "H": H, "Hb": 1, "algorithm": "local",
            "model": "resnet20", "B": 128, "wall_s": wall, "comm_intra_s": 0.0, "comm_inter_s": 0.0}


def test_one_line_per_topology_in_minutes(tmp_path):
    f = tmp_path / "w.jsonl"
    recs = [_rec("a", h, 600.0 * h ** -0.5) for h in (1, 4, 16)] + [_rec("b", h, 1200.0) for h in (1, 4, 16)]
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    fig = plot_wall(load_sim([f]), RenderConfig(formats=("png",)), marks=[(16, 2.5)])["wall_H"]
    ax = fig.axes[0]
    data = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}
    assert data["a"] == ([1.0, 4.0, 16.0], pytest.approx([10.0, 5.0, 2.5]))
    assert data["b"][1] == pytest.approx([20.0] * 3)
    assert data["measured (the fitted preset's input)"] == ([16], [2.5])


def test_cli_writes_the_named_figure_and_rejects_bad_marks(tmp_path, capsys):
    f = tmp_path / "w.jsonl"
    f.write_text("".join(json.dumps(_rec("a", h, 100.0 / h)) + "\n" for h in (1, 2)))
    assert main(["wall", str(f), "--name", "x", "--out-dir", str(tmp_path), "--formats", "png"]) == 0
    assert (tmp_path / "x.png").stat().st_size > 1000
    assert main(["wall", str(f), "--mark", "16=8", "--out-dir", str(tmp_path)]) == 2
    assert "--mark must be H:MINUTES like 16:8.57, got '16=8'" in capsys.readouterr().err
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(_rec("a", 1, 5.0)) + "\n")
    with pytest.raises(InputError, match="two or more H values"):
        plot_wall(load_sim([one]), RenderConfig(formats=("png",)))
