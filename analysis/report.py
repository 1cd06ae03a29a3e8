"""One self-contained HTML page per run: its configuration, its summary and every figure, embedded as PNG."""
from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from analysis.curvesplot import plot_breakdown, plot_curves
from analysis.errors import AnalysisError
from analysis.files import atomic_write_text
from analysis.predictplot import pairs_from_runs, plot_predict
from analysis.render import RenderConfig, figure_bytes
from analysis.runs import RunDir, load_run
from analysis.speedupplot import plot_time_to_acc

__all__ = ["flatten", "build_report", "write_report"]

log = logging.getLogger(__name__)

_CSS = """body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}img{max-width:100%;height:auto}.note{color:#777}"""


def flatten(obj: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested objects as (dotted.key, value) rows; lists stay whole (shown as JSON)."""
    rows: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.6g}</td>'
    if isinstance(value, (int, bool)) or value is None:
        return f'<td class="num">{html.escape(json.dumps(value))}</td>'
    text = value if isinstance(value, str) else json.dumps(value)
    return f"<td>{html.escape(text)}</td>"


def _table(title: str, obj: Mapping[str, Any] | None) -> str:
    if not obj:
        return f"<h2>{html.escape(title)}</h2><p class=note>not available</p>"
    rows = "".join(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in flatten(obj))
    return f"<h2>{html.escape(title)}</h2><table>{rows}</table>"


def _figures(run: RunDir, cfg: RenderConfig) -> tuple[dict[str, Figure], list[str]]:
    """Every figure that the run's files allow; the reason for each one that they do not."""
    makers: list[tuple[str, Callable[[], dict[str, Figure]]]] = [
        ("training curves", lambda: plot_curves([run], cfg)),
        ("time breakdown", lambda: plot_breakdown([run], cfg)),
    ]
    if run.summary is not None and run.summary_num("tta_s") is not None:
        makers.append(("time to accuracy", lambda: plot_time_to_acc([run], cfg)))
    if run.summary is not None and run.summary_num("predicted_s") is not None:
        makers.append(("predicted vs measured", lambda: plot_predict(pairs_from_runs([run]), cfg)))
    figures: dict[str, Figure] = {}
    notes = []
    for what, make in makers:
        try:
            figures.update(make())
        except AnalysisError as exc:
            log.warning("report: %s not drawn: %s", what, exc)
            notes.append(f"{what} not drawn: {exc}")
    return figures, notes


def build_report(run: RunDir, cfg: RenderConfig) -> tuple[str, list[str]]:
    """The HTML text of the report and the stems of the figures it embeds."""
    figures, notes = _figures(run, cfg)
    parts = [(f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>Run report: {html.escape(run.name)}</title><style>{_CSS}</style></head><body>"),
             f"<h1>Run report: {html.escape(run.name)}</h1>",
             (f"<p>{html.escape(run.label)} &middot; directory <code>{html.escape(str(run.path))}</code> "
             f"&middot; {len(run.records('epoch'))} epoch and {len(run.records('step'))} step records</p>"),
             _table("Summary", run.summary), _table("Configuration", run.config), "<h2>Figures</h2>"]
    for stem, fig in figures.items():
        data = base64.b64encode(figure_bytes(fig, "png", cfg)).decode("ascii")
        parts.append(f'<figure><img alt="{stem}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(stem)}</figcaption></figure>")
    parts.extend(f"<p class=note>{html.escape(n)}</p>" for n in notes)
    parts.append("</body></html>\n")
    return "\n".join(parts), list(figures)


def write_report(run_dir: str | Path, out: str | Path | None, cfg: RenderConfig) -> tuple[Path, list[str]]:
    """Write RUN_DIR/report.html (or ``out``) atomically; return its path and the embedded figure stems."""
    run = load_run(run_dir)
    text, stems = build_report(run, cfg)
    target = Path(out) if out is not None else run.path / "report.html"
    return atomic_write_text(target, text), stems
