"""The one status writer: serialized per object, written with the resourceVersion it read."""

from __future__ import annotations

import asyncio
import copy

import pytest

from fleetserve.operator.kube import KubeError, Ref
from fleetserve.operator.status.conditions import ConditionState, merge_conditions
from fleetserve.operator.status.writer import StatusWriter

REF = Ref("fleetserve.io/v1alpha1", "InferenceService", "ml", "qwen")


class VersionedKube:
    """One object with a resourceVersion that moves on every write; stale writes get 409."""

    def __init__(self) -> None:
        self.obj = {"metadata": {"name": "qwen", "resourceVersion": "1"}, "status": {}}
        self.writes: list[dict] = []

    def bump(self, **status) -> None:  # someone else writes (kopf's annotations, another replica)
        self.obj["status"].update(status)
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)

    async def get(self, ref):
        await asyncio.sleep(0)
        return copy.deepcopy(self.obj)

    async def patch_status(self, ref, status, resource_version=None):
        await asyncio.sleep(0)
        if resource_version is not None and resource_version != self.obj["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        self.writes.append(status)
        self.bump(**status)
        return copy.deepcopy(self.obj)


async def test_a_write_that_lost_a_race_reads_and_computes_again():
    kube = VersionedKube()
    seen = []

    async def compute(live):
        seen.append(live["metadata"]["resourceVersion"])
        if len(seen) == 1:
            kube.bump(other="changed meanwhile")  # lands between our read and our write
        return {"replicas": 2}

    await StatusWriter(kube).update(REF, compute)
    assert seen == ["1", "2"] and kube.writes == [{"replicas": 2}]


async def test_concurrent_updates_of_one_object_do_not_interleave():
    kube = VersionedKube()
    writer = StatusWriter(kube)
    inside = 0
    overlaps = []

    async def compute(live):
        nonlocal inside
        inside += 1
        overlaps.append(inside)
        await asyncio.sleep(0.01)
        inside -= 1
        return {"n": len(overlaps)}

    await asyncio.gather(*(writer.update(REF, compute) for _ in range(5)))
    assert max(overlaps) == 1 and len(kube.writes) == 5  # each saw the previous one's write


async def test_an_unchanged_status_is_not_written_and_a_deleting_object_is_skipped():
    kube = VersionedKube()
    kube.obj["status"] = {"replicas": 2}
    await StatusWriter(kube).update(REF, lambda live: asyncio.sleep(0, {"replicas": 2}))
    kube.obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert await StatusWriter(kube).update(REF, lambda live: asyncio.sleep(0, {"replicas": 3})) is None
    assert kube.writes == []


async def test_a_status_that_never_settles_gives_up_with_a_conflict():
    kube = VersionedKube()

    async def compute(live):
        kube.bump()
        return {"replicas": 1}

    with pytest.raises(KubeError) as error:
        await StatusWriter(kube).update(REF, compute)
    assert error.value.status == 409


def test_conditions_are_a_map_by_type_other_loops_conditions_stay():
    current = [{"type": "Ready", "status": "False", "reason": "X", "message": "", "lastTransitionTime": "t0"},
               {"type": "AdaptersReady", "status": "True", "reason": "Loaded", "message": "",
                "lastTransitionTime": "t0"}]
    merged = merge_conditions(current, [ConditionState("Ready", "True", "Ready")], 3, "t1")
    assert [c["type"] for c in merged] == ["Ready", "AdaptersReady"]
    assert merged[0]["lastTransitionTime"] == "t1" and merged[1] == current[1]
    again = merge_conditions(merged, [ConditionState("Ready", "True", "Ready", "new message")], 4, "t2")
    assert again[0]["lastTransitionTime"] == "t1" and len({c["type"] for c in again}) == len(again)
