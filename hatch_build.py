"""Metadata hook of the meta-package: dependencies from [tool.delira.members] and [tool.delira.extras].

In a checkout each member is referenced by its folder (``delira-io @ file:///.../packages/delira-io``)
so that ``pip install .`` installs the five packages from the checkout; with ``DELIRA_RELEASE=1`` (or
without the packages/ folder, as in an sdist) the compatible-release ranges are used instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hatchling.metadata.plugin.interface import MetadataHookInterface


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?", requirement.strip())
    if not match:
        raise ValueError(f"[tool.delira.extras]: cannot parse {requirement!r}; write it as name[extra,...]")
    return match.group(1), match.group(2) or ""


class CustomMetadataHook(MetadataHookInterface):
    def update(self, metadata: dict) -> None:
        delira = _read_pyproject(Path(self.root)).get("tool", {}).get("delira", {})
        members: dict[str, str] = delira["members"]
        extras: dict[str, list[str]] = delira.get("extras", {})
        packages = Path(self.root) / "packages"
        local = packages.is_dir() and os.environ.get("DELIRA_RELEASE", "") not in ("1", "true", "yes")

        def requirement(name: str, extra: str = "") -> str:
            if name not in members:
                raise ValueError(
                    f"[tool.delira.extras] names {name!r}, which is not in [tool.delira.members]"
                )
            if local:
                return f"{name}{extra} @ {(packages / name).resolve().as_uri()}"
            return f"{name}{extra}{members[name]}"

        metadata["dependencies"] = [requirement(name) for name in members]
        metadata["optional-dependencies"] = {
            extra: [requirement(*_split(req)) for req in reqs] for extra, reqs in extras.items()
        }


def _read_pyproject(root: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)
