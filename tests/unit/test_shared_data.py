"""The one rule for shared data in tests: $LOCALSGD_DATA or ../shared/data; missing is a skip, a failure under CI."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.shared_data import REPO, data_root, need_data


def test_data_root_is_the_env_var_or_beside_the_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOCALSGD_DATA", raising=False)
    assert data_root() == REPO.parent / "shared" / "data"
    monkeypatch.setenv("LOCALSGD_DATA", str(tmp_path))
    (tmp_path / "w8a").write_text("+1 1:1\n")
    assert data_root() == tmp_path and need_data("w8a") == tmp_path / "w8a"


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_data_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str,
                                               outcome: type[BaseException]) -> None:
    monkeypatch.setenv("LOCALSGD_DATA", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=f"shared data file {tmp_path / 'w8a'} not found"):
        need_data("w8a")


def test_no_absolute_machine_path_in_the_repository() -> None:
    """The folder the repository sits in must not be named by any tracked text file (use ../shared or the env var)."""
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    needle = str(REPO.parent) + "/"
    bad = [f for f in files if (REPO / f).is_file() and needle.encode() in (REPO / f).read_bytes()]
    assert not bad, f"files naming {needle}: {bad}"
