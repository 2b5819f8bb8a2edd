"""The Helm chart rendered and linted by Helm's Go SDK; every object validated against Kubernetes."""

from __future__ import annotations

import hashlib

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    CHART_DIR,
    CI_VALUES,
    K8S_VERSION,
    NAMESPACE,
    ROOT,
    find,
    load_values,
    objects,
    render,
)

from fleetserve.operator import main as operator_main
from fleetserve.operator.config import ENV_NAMESPACES, ENV_RUNTIME_IMAGE

VALUE_SETS = [None, *CI_VALUES]
IDS = ["defaults", *[p.name for p in CI_VALUES]]
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                      "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart")


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, for custom resources the chart renders."""
    schemas = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            for version in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=IDS)
def test_chart_lints_clean(values_file):
    report = helm.lint(str(CHART_DIR), load_values(values_file), strict=True, kube_version=f"v{K8S_VERSION}.0")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=IDS)
def test_every_rendered_object_validates(values_file):
    custom = crd_schemas()
    for obj in objects(load_values(values_file)):
        key = (obj["apiVersion"], obj["kind"])
        if key in custom:
            jsonschema.Draft7Validator(custom[key]).validate(obj)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=IDS)
def test_every_object_carries_the_recommended_labels(values_file):
    for obj in objects(load_values(values_file)):
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in RECOMMENDED_LABELS if label not in labels]
        assert missing == [], (obj["kind"], obj["metadata"]["name"], missing)


def test_one_kind_per_template_file():
    for values_file in VALUE_SETS:
        for path, docs in render(load_values(values_file)).items():
            assert len({doc["kind"] for doc in docs}) <= 1, path


def test_every_crd_validates_as_a_custom_resource_definition():
    for path in (CHART_DIR / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            assert crd["kind"] == "CustomResourceDefinition"
            kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


def test_chart_crds_are_the_top_level_crds():
    top = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART_DIR / "crds").glob("*.yaml")}
    assert chart == top


def operator_container(values=None) -> dict:
    (deployment,) = find(objects(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=IDS)
def test_operator_args_are_flags_fleetserve_operator_accepts(values_file):
    container = operator_container(load_values(values_file))
    assert container["args"][0] == "operator"
    operator_main.parser().parse_args(container["args"][1:])  # exits on an unknown flag


def test_config_reaches_the_operator_through_its_environment():
    values = {"operator": {"watchNamespaces": ["a", "b"], "runtimeImage": "img:cuda"}}
    (config_map,) = find(objects(values), "ConfigMap")
    assert config_map["data"] == {ENV_NAMESPACES: "a,b", ENV_RUNTIME_IMAGE: "img:cuda"}
    (default_map,) = find(objects(), "ConfigMap")
    assert default_map["data"][ENV_RUNTIME_IMAGE] == "ghcr.io/fleetserve/fleetserve:0.1.0"
    assert operator_container()["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]


def checksum(values=None) -> str:
    (deployment,) = find(objects(values), "Deployment")
    return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_config_checksum_rolls_the_operator_on_config_changes():
    rendered = helm.Chart.load(str(CHART_DIR)).render({}, name="fs", namespace=NAMESPACE, is_install=True)
    config_text = rendered["fleetserve/templates/configmap.yaml"]
    assert checksum() == hashlib.sha256(config_text.encode()).hexdigest()
    assert checksum({"operator": {"watchNamespaces": ["a"]}}) != checksum()
    assert checksum({"replicaCount": 2}) == checksum()


def test_operator_pod_runs_non_root_with_a_liveness_probe():
    (deployment,) = find(objects(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]


def test_watching_namespaces_binds_rights_per_namespace_only():
    objs = objects({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    bindings = find(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert [b["metadata"]["name"] for b in find(objs, "ClusterRoleBinding")] == ["fs-fleetserve-cluster"]
    assert sorted(p["metadata"]["namespace"] for p in find(objs, "KopfPeering")) == ["team-a", "team-b"]
    assert find(objs, "ClusterKopfPeering") == []
    all_ns = objects()
    assert find(all_ns, "RoleBinding") == [] and len(find(all_ns, "ClusterRoleBinding")) == 2
    assert [p["metadata"]["name"] for p in find(all_ns, "ClusterKopfPeering")] == ["fleetserve"]


def test_standalone_has_no_peering_and_refuses_several_replicas():
    objs = objects({"peering": {"enabled": False}})
    assert "--standalone" in operator_container({"peering": {"enabled": False}})["args"]
    assert find(objs, "ClusterKopfPeering") == [] and find(objs, "KopfPeering") == []
    with pytest.raises(helm.HelmError, match="peering"):
        render({"replicaCount": 2, "peering": {"enabled": False}})


def test_notes_render():
    rendered = helm.Chart.load(str(CHART_DIR)).render({}, name="fs", namespace=NAMESPACE, is_install=True)
    notes = rendered["fleetserve/templates/NOTES.txt"]
    assert "kubectl get fsvc" in notes and "all namespaces" in notes
