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


def machine_paths() -> list[str]:
    """The absolute paths no tracked file may name: the checkout's, the shared folder's, and the folder they sit in
    unless that is a system-wide place (the root or the temporary folder, which example outputs name legitimately)."""
    import tempfile
    shared = (REPO.parent / "shared").resolve()
    places = {REPO, REPO.resolve(), shared, data_root().resolve()}
    parent = REPO.parent.resolve()
    if parent not in (Path("/"), Path(tempfile.gettempdir()).resolve(), Path("/tmp"), Path("/var/tmp")):
        places.add(parent)
    return sorted({str(p).rstrip("/") + "/" for p in places})


def test_machine_paths_guard_the_checkout_and_the_shared_folder_not_the_temp_folder() -> None:
    needles = machine_paths()
    assert str(REPO) + "/" in needles and str((REPO.parent / "shared").resolve()) + "/" in needles
    assert "/tmp/" not in needles and "/" not in needles


def test_no_absolute_machine_path_in_the_repository() -> None:
    """No tracked text file names this machine's checkout or shared folder (use ../shared or the env var)."""
    import subprocess
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [f for f in out.decode().split("\0") if f]
    needles = [n.encode() for n in machine_paths()]
    bad = {n.decode(): [f for f in files if (REPO / f).is_file() and n in (REPO / f).read_bytes()] for n in needles}
    bad = {n: fs for n, fs in bad.items() if fs}
    assert not bad, f"files naming a path of this machine: {bad}"
