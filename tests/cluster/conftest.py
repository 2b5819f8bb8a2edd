"""The local cluster (tests/cluster/cluster.py) for end-to-end tests of the user's path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cluster import LocalCluster

# The chart as a single-replica install: peering needs kopf's peering CRD objects, which only add
# time here; tests/charts covers the peering templates.
CHART_VALUES = {"peering": {"enabled": False}, "operator": {"resyncSeconds": 30}}


@pytest.fixture()
async def cluster(tmp_path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path / "cluster") as local:
        yield local
