"""Helpers for the chart tests: load, render and split the chart with Helm's own Go SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "fleetserve"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*.yaml"))
K8S_VERSION = "1.30"
RELEASE = "fs"
NAMESPACE = "fleetserve-system"


def load_values(path: Path | None) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) if path is not None else {}


def render(values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Template path -> the objects it rendered (NOTES.txt left out)."""
    chart = helm.Chart.load(str(CHART_DIR))
    rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {
        path: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
    }


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [obj for docs in render(values).values() for obj in docs]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
