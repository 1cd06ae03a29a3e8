"""analysis: plots and run reports, rendered headless from JSON/JSONL files."""
from __future__ import annotations

from analysis.errors import AnalysisError, InputError

__all__ = ["AnalysisError", "InputError"]
