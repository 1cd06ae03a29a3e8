"""Emulated-cluster tests: skipped with the reason where namespaces cannot be made, except under CI=true (a failure)."""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from cluster import unavailable_reason
from cluster.netns import state_dir as default_state_dir

_OURS = re.compile(r"\blsgd[0-9a-f]{5}[bvn]\d*\b")


def _our_names() -> set[str]:
    """Names of our objects (namespaces and links) present on the machine now, except those of clusters that a
    live run outside the tests holds (a benchmark running beside the suite); the tests keep their state apart."""
    text = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    text += subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    others = {path.stem for path in default_state_dir().glob("*.json")}
    return {name for name in _OURS.findall(text) if name[4:9] not in others}


@pytest.fixture(scope="session")
def cluster_available() -> None:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"emulated-cluster tests cannot run under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every module of cluster tests leaves no namespace, veth or bridge of ours behind."""
    before = _our_names() if unavailable_reason() is None else None
    yield
    if before is not None:
        left = _our_names() - before
        assert not left, f"{request.module.__name__} left these behind: {sorted(left)}"


@pytest.fixture()
def state_dir(tmp_path, monkeypatch) -> str:
    """A private state folder, so that a test's cleanup sees only its own runs."""
    path = str(tmp_path / "state")
    monkeypatch.setenv("LOCALSGD_CLUSTER_STATE", path)
    return path
