"""kopf handlers called directly with their kwargs and a logger, over an in-memory API."""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
import pytest

from fleetserve.operator.config import OperatorConfig
from fleetserve.operator.handlers import inference_services, on_child_event, on_inference_service
from fleetserve.operator.kube import KubeError, Ref
from fleetserve.operator.status.writer import StatusWriter
from fleetserve.runtime import wire

LOGGER = logging.getLogger("test")
CONFIG = OperatorConfig(runtime_image="registry.test/fleetserve:1")
ISVC = Ref("fleetserve.io/v1alpha1", "InferenceService", "ml", "qwen")


class FakeKube:
    """The KubeClient interface over a dict; records every write."""

    def __init__(self, fail_with: int | None = None) -> None:
        self.objects: dict[Ref, dict] = {}
        self.writes: list[tuple[str, Ref]] = []
        self.status_patches: list[tuple[Ref, dict]] = []
        self.fail_with = fail_with

    async def get(self, ref):
        if self.fail_with:
            raise KubeError(self.fail_with, "boom")
        return copy.deepcopy(self.objects.get(ref))

    async def create(self, manifest):
        ref = Ref.of(manifest)
        self.writes.append(("create", ref))
        self.objects[ref] = copy.deepcopy(manifest)
        return copy.deepcopy(manifest)

    async def apply(self, manifest):
        """Server-side apply: creates a missing object, like a real API server (unlike kmock)."""
        ref = Ref.of(manifest)
        self.writes.append(("apply", ref))
        self.objects[ref] = copy.deepcopy(manifest)
        return copy.deepcopy(manifest)

    async def delete(self, ref):
        self.writes.append(("delete", ref))
        return self.objects.pop(ref, None) is not None

    async def list(self, api_version, kind, namespace, label_selector):
        return [copy.deepcopy(o) for ref, o in self.objects.items() if ref.kind == kind and ref.namespace == namespace]

    async def patch_status(self, ref, status, resource_version=None):
        self.status_patches.append((ref, status))
        self.objects[ref].setdefault("status", {}).update(copy.deepcopy(status))
        return copy.deepcopy(self.objects[ref])


def memo(client: FakeKube) -> kopf.Memo:
    return kopf.Memo(client=client, config=CONFIG, writer=StatusWriter(client))


def body(spec: dict, status: dict | None = None, generation: int = 1) -> kopf.Body:
    raw: dict[str, Any] = {"apiVersion": "fleetserve.io/v1alpha1", "kind": "InferenceService",
                      "metadata": {"name": "qwen", "namespace": "ml", "uid": "u1", "generation": generation},
                      "spec": spec, "status": status or {}}
    return kopf.Body(raw)  # type: ignore[arg-type]  # kopf's RawBody TypedDict omits generation


def as_kopf_index(entries: dict) -> dict:
    """kopf keeps every value an indexer returned for a key: key -> collection of values."""
    return {key: [value] for key, value in entries.items()}


SPEC = {"model": {"source": "hf://Qwen/Qwen3-8B"}}


async def reconcile_once(client: FakeKube, raw: kopf.Body) -> dict:
    """Store ``raw`` as the InferenceService, run the handler; returns {"status": written} or {}."""
    client.objects[ISVC] = copy.deepcopy(dict(raw))
    before = len(client.status_patches)
    await on_inference_service(namespace="ml", name="qwen", logger=LOGGER, memo=memo(client))
    return {"status": client.status_patches[-1][1]} if len(client.status_patches) > before else {}


async def test_first_reconcile_creates_children_and_reports_not_ready():
    client = FakeKube()
    patch = await reconcile_once(client, body(SPEC))
    created = {(ref.kind, ref.name) for verb, ref in client.writes if verb == "apply"}
    assert created == {("ServiceAccount", "qwen-router"), ("Role", "qwen-router"), ("RoleBinding", "qwen-router"),
                       ("Service", "qwen-runtime"), ("Deployment", "qwen-runtime"), ("Service", "qwen"),
                       ("Deployment", "qwen-router")}
    ready = patch["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "RuntimeNotReady")
    assert patch["status"]["url"] == "http://qwen.ml.svc.cluster.local"
    assert patch["status"]["observedGeneration"] == 1


async def test_second_reconcile_of_an_unchanged_spec_writes_nothing():
    client = FakeKube()
    first = await reconcile_once(client, body(SPEC))
    client.writes.clear()
    second = await reconcile_once(client, body(SPEC, status=dict(first["status"])))
    assert client.writes == []
    assert "status" not in second  # nothing changed, no status write either


async def test_changed_spec_is_applied_to_the_runtime_deployment():
    client = FakeKube()
    await reconcile_once(client, body(SPEC))
    client.writes.clear()
    changed = {**SPEC, "runtime": {"args": ["--page-size", "32"]}, "replicas": {"count": 2}}
    await reconcile_once(client, body(changed, generation=2))
    assert [(v, r.kind, r.name) for v, r in client.writes] == [("apply", "Deployment", "qwen-runtime")]
    runtime = client.objects[Ref("apps/v1", "Deployment", "ml", "qwen-runtime")]
    assert runtime["spec"]["replicas"] == 2
    assert runtime["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--page-size", "32"]


async def test_invalid_spec_becomes_a_condition_and_touches_nothing():
    client = FakeKube()
    patch = await reconcile_once(client, body({"model": {"source": "s3://b/m"}}))
    assert client.writes == []
    ready = patch["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "s3://" in ready["message"]


async def test_an_object_owned_by_someone_else_is_left_alone():
    client = FakeKube()
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "qwen", "namespace": "ml"}}
    client.objects[Ref.of(foreign)] = foreign
    patch = await reconcile_once(client, body(SPEC))
    assert ("apply", Ref.of(foreign)) not in client.writes
    ready = patch["status"]["conditions"][0]
    assert ready["reason"] == "ChildConflict" and "Service qwen already exists" in ready["message"]


async def test_api_errors_are_retried_by_kopf_not_raised_raw():
    client = FakeKube()
    client.objects[ISVC] = dict(body(SPEC))
    client.fail_with = 503
    with pytest.raises(kopf.TemporaryError):
        await on_inference_service(namespace="ml", name="qwen", logger=LOGGER, memo=memo(client))


async def test_removing_the_ingress_deletes_it():
    client = FakeKube()
    await reconcile_once(client, body({**SPEC, "ingress": {"host": "llm.example.com"}}))
    ingress = Ref("networking.k8s.io/v1", "Ingress", "ml", "qwen")
    assert ingress in client.objects
    await reconcile_once(client, body(SPEC, generation=2))
    assert ("delete", ingress) in client.writes and ingress not in client.objects


def child_event(type_: str | None, kind: str) -> dict:
    body = kopf.Body({"kind": kind, "metadata": {"name": "qwen-runtime", "namespace": "ml",
                                                 "labels": {"fleetserve.io/inference-service": "qwen"}}})
    return {"event": {"type": type_, "object": dict(body)}, "body": body, "namespace": "ml",
            "labels": body["metadata"]["labels"], "logger": LOGGER}


async def test_a_deleted_child_makes_the_parent_reconcile_and_recreate_it():
    client = FakeKube()
    client.objects[ISVC] = dict(body(SPEC))
    index = as_kopf_index(inference_services(namespace="ml", name="qwen", body=body(SPEC)))
    await on_child_event(**child_event("DELETED", "Deployment"), memo=memo(client), inference_services=index)
    assert ("apply", Ref("apps/v1", "Deployment", "ml", "qwen-runtime")) in client.writes
    ((ref, status),) = client.status_patches
    assert ref == Ref("fleetserve.io/v1alpha1", "InferenceService", "ml", "qwen")
    assert status["conditions"][0]["type"] == "Ready"


async def test_a_changed_deployment_only_refreshes_the_parents_status():
    client = FakeKube()
    first = await reconcile_once(client, body(SPEC))
    client.writes.clear()
    runtime = Ref("apps/v1", "Deployment", "ml", "qwen-runtime")
    client.objects[runtime]["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    client.objects[Ref("apps/v1", "Deployment", "ml", "qwen-router")]["status"] = {"readyReplicas": 1}
    parent = body(SPEC, status=dict(first["status"]))
    client.objects[ISVC] = dict(parent)
    client.status_patches.clear()
    index = as_kopf_index(inference_services(namespace="ml", name="qwen", body=parent))
    await on_child_event(**child_event("MODIFIED", "Deployment"), memo=memo(client), inference_services=index)
    assert client.writes == []
    ((_, status),) = client.status_patches
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"]) == ("Ready", "True")
    assert status["readyReplicas"] == 1


async def test_child_events_that_need_nothing_do_nothing():
    client = FakeKube()
    deleting = body(SPEC)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    gone_parent = as_kopf_index(inference_services(namespace="ml", name="qwen", body=deleting))
    live_parent = as_kopf_index(inference_services(namespace="ml", name="qwen", body=body(SPEC)))
    client.objects[ISVC] = dict(deleting)
    await on_child_event(**child_event("DELETED", "Deployment"), memo=memo(client), inference_services=gone_parent)
    await on_child_event(**child_event("DELETED", "Service"), memo=memo(client), inference_services={})
    await on_child_event(**child_event("MODIFIED", "Service"), memo=memo(client), inference_services=live_parent)
    client.objects[ISVC] = dict(body(SPEC))
    await on_child_event(**child_event("MODIFIED", "Service"), memo=memo(client), inference_services=live_parent)
    assert client.writes == [] and client.status_patches == []


class RejectingKube(FakeKube):
    """An API server that refuses one kind of child with a given status."""

    def __init__(self, kind: str, status: int) -> None:
        super().__init__()
        self.kind, self.status = kind, status

    async def apply(self, manifest):
        if manifest["kind"] == self.kind:
            raise KubeError(self.status, f"{self.kind} refused")
        return await super().apply(manifest)


@pytest.mark.parametrize(("status", "reason"), [(422, "ChildRejected"), (403, "Forbidden")])
async def test_a_child_the_api_refuses_becomes_a_condition(status, reason):
    patch = await reconcile_once(RejectingKube("Ingress", status), body({**SPEC, "ingress": {"host": "a.b"}}))
    ready = patch["status"]["conditions"][0]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", reason, "Ingress refused")


class KmockLikeKube(FakeKube):
    """An API server that cannot create by apply (404 for a missing object), as kmock."""

    async def apply(self, manifest):
        if Ref.of(manifest) not in self.objects:
            raise KubeError(404, "not found")
        return await super().apply(manifest)


async def test_without_create_on_apply_children_are_posted():
    client = KmockLikeKube()
    await reconcile_once(client, body(SPEC))
    runtime = Ref("apps/v1", "Deployment", "ml", "qwen-runtime")
    assert ("create", runtime) in client.writes and runtime in client.objects


async def test_a_spec_turning_invalid_keeps_the_serving_pods_and_says_so():
    client = FakeKube()
    first = await reconcile_once(client, body(SPEC))
    for name in ("qwen-runtime", "qwen-router"):
        client.objects[Ref("apps/v1", "Deployment", "ml", name)]["status"] = {
            "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    client.writes.clear()
    patch = await reconcile_once(client, body({"model": {"source": "s3://b/m"}}, status=dict(first["status"]),
                                              generation=2))
    assert client.writes == []  # the Deployments of the last valid spec stay as they are
    ready, progressing, degraded = patch["status"]["conditions"][:3]
    assert (ready["status"], ready["reason"]) == ("True", "ServingLastValidSpec") and "s3://" in ready["message"]
    assert (progressing["status"], progressing["reason"]) == ("False", "InvalidSpec")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")


async def test_a_changed_immutable_selector_recreates_the_deployment():
    client = FakeKube()
    await reconcile_once(client, body(SPEC))
    runtime = Ref("apps/v1", "Deployment", "ml", "qwen-runtime")
    client.objects[runtime]["spec"]["selector"] = {"matchLabels": {"app": "made-by-an-older-version"}}
    client.writes.clear()
    await reconcile_once(client, body(SPEC))
    assert client.writes == [("delete", runtime), ("apply", runtime)]  # apply creates, as a real server does
    assert client.objects[runtime]["spec"]["selector"]["matchLabels"][wire.LABEL_SERVICE] == "qwen"
