"""The operator's RBAC grants what the operator's code does, and the router's Role can be granted."""

from __future__ import annotations

import pytest
from chart_helpers import find, objects

from fleetserve.operator import names
from fleetserve.operator.kube import PLURALS
from fleetserve.operator.manifests.children import build_children
from fleetserve.operator.manifests.meta import Owner
from fleetserve.operator.spec import InferenceServiceSpec

SPEC = InferenceServiceSpec.model_validate({"model": {"source": "hf://o/m"}, "ingress": {"host": "h"},
                                            "disruptionBudget": {"maxUnavailable": 1}})
CHILDREN = build_children(Owner("x", "ns", "uid"), SPEC, "img", 1)


def namespaced_rules() -> list[dict]:
    (role,) = [r for r in find(objects(), "ClusterRole") if not r["metadata"]["name"].endswith("-cluster")]
    return role["rules"]


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


@pytest.mark.parametrize("child", CHILDREN, ids=lambda c: c["kind"])
def test_operator_may_create_read_and_apply_every_child(child):
    for verb in ("get", "create", "patch"):
        assert allows(namespaced_rules(), group_of(child["apiVersion"]), PLURALS[child["kind"]], verb), verb


def test_operator_may_watch_the_children_it_has_handlers_for_and_delete_what_it_removes():
    rules = namespaced_rules()
    for group, resource in (("apps", "deployments"), ("", "services"), ("", "pods")):
        assert allows(rules, group, resource, "list") and allows(rules, group, resource, "watch")
    assert allows(rules, "networking.k8s.io", "ingresses", "delete")  # spec.ingress removed
    assert allows(rules, "policy", "poddisruptionbudgets", "delete")  # spec.disruptionBudget removed
    # an immutable field changed: delete and create again
    assert allows(rules, "apps", "deployments", "delete") and allows(rules, "", "services", "delete")
    assert not allows(rules, "", "pods", "delete")  # pods are the Deployment controller's


def test_operator_may_handle_inference_services_and_write_their_status():
    rules = namespaced_rules()
    for verb in ("get", "list", "watch", "patch"):
        assert allows(rules, names.GROUP, names.PLURAL, verb)
    assert allows(rules, names.GROUP, f"{names.PLURAL}/status", "patch")
    assert allows(rules, names.GROUP, f"{names.PLURAL}/finalizers", "update")  # blockOwnerDeletion


def test_operator_holds_every_right_it_grants_the_router():
    """Kubernetes refuses to let the operator create a Role granting more than it has itself."""
    (router_role,) = [c for c in CHILDREN if c["kind"] == "Role"]
    for rule in router_role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert allows(namespaced_rules(), group, resource, verb), (group, resource, verb)


def test_no_wildcards_and_no_secret_access():
    for role in find(objects(), "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert "secrets" not in rule["resources"]  # pods read Secrets through their own env refs


def test_cluster_scoped_reads_kopf_needs():
    (cluster,) = find(objects(), "ClusterRole", "fs-fleetserve-cluster")
    rules = cluster["rules"]
    assert allows(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert allows(rules, "", "namespaces", "watch")
    assert allows(rules, "kopf.dev", "clusterkopfpeerings", "patch")
