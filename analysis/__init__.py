"""analysis: plots and run reports, rendered headless from JSON/JSONL files."""
