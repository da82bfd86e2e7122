"""Build hook: a wheel carries the page (`static/`) and the migrations (`alembic/`) inside the
`app` package, where `app/resources.py` finds them once installed.

Only for a real wheel: an editable install reads them from the checkout (a copy in
site-packages would go stale at the first edit).
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class PackagedResources(BuildHookInterface):  # type: ignore[misc]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"]["static"] = "app/_static"
            build_data["force_include"]["alembic"] = "app/_migrations"
