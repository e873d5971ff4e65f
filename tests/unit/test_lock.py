"""The locks that make and CI install from: every dependency pyproject.toml names is pinned
there, within its range, with hashes, and what runs the tests is what the lock says."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(name: str) -> dict[str, tuple[Version, Marker | None, int]]:
    """package -> (version, environment marker, number of hashes) of one lock file."""
    out: dict[str, tuple[Version, Marker | None, int]] = {}
    current: str | None = None
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            marker = Marker(match.group(3)) if match.group(3) else None
            out[current] = (Version(match.group(2)), marker, 0)
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            version, marker, hashes = out[current]
            out[current] = (version, marker, hashes + 1)
    return out


def project() -> dict[str, list[str]]:
    data: dict[str, dict[str, list[str]]] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]


@pytest.mark.parametrize(("lock", "extras"), [("runtime.lock", ()), ("dev.lock", ("dev",))])
def test_every_dependency_is_pinned_in_range_with_hashes(lock: str,
                                                         extras: tuple[str, ...]) -> None:
    locked = pins(lock)
    wanted = [Requirement(r) for r in project()["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project()["optional-dependencies"][extra]]
    assert wanted
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in requirements/{lock}: run `make lock`"
        version, _, hashes = locked[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements/{lock} pins {name}=={version}, outside pyproject's {req}: "
            "run `make lock`")
        assert hashes >= 1, f"{name} has no hash in requirements/{lock}"
    assert all(hashes >= 1 for _, _, hashes in locked.values())


def test_the_build_backend_is_locked() -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for lock in ("dev.lock", "build.lock"):
        locked = pins(lock)
        for text in build:
            req = Requirement(text)
            assert req.specifier.contains(locked[canonicalize_name(req.name)][0])


def test_runtime_lock_agrees_with_the_dev_lock() -> None:
    """The image (runtime.lock) runs what the tests ran (dev.lock)."""
    dev = pins("dev.lock")
    for name, (version, _, _) in pins("runtime.lock").items():
        assert dev[name][0] == version, f"{name}: runtime.lock {version}, dev.lock {dev[name][0]}"


def test_the_installed_packages_are_the_locked_ones() -> None:
    """What runs these tests came from the lock (make venv), not from a resolution of its
    own: an unpinned install would show here as another version."""
    for name, (version, marker, _) in pins("dev.lock").items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name}=={version} is locked but not installed: run `make venv`")
        assert installed == version, f"{name} {installed} is installed, the lock says {version}"
