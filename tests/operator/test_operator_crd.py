"""The generated CRD: committed copies are fresh, the schema is structural and documents every field."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fleetserve.operator import crd, names

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = [ROOT / "crds" / "inferenceservice.yaml", ROOT / "charts" / "fleetserve" / "crds" / "inferenceservice.yaml"]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
K8S_VERSION = "1.30"


def schema() -> dict:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict, path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_crd_is_what_the_model_generates(path):
    assert path.read_text() == crd.render(), (
        f"{path} is stale: run `python -P -m fleetserve.operator.crd > crds/inferenceservice.yaml` "
        "and copy it to charts/fleetserve/crds/")


def test_module_prints_the_crd():
    out = subprocess.run([sys.executable, "-P", "-m", "fleetserve.operator.crd"], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert yaml.safe_load(out.stdout)["metadata"]["name"] == names.CRD_NAME


def test_crd_validates_against_the_apiextensions_schema():
    kubernetes_validate.validate(crd.build_crd(), K8S_VERSION, strict=True)


def test_every_field_has_a_description():
    """What `kubectl explain` prints; list items and map values are described by their field."""
    undocumented = [
        f"{part}{path}" for part in ("spec", "status") for path, node in walk(schema()["properties"][part])
        if not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert undocumented == []


def test_schema_is_structural():
    for path, node in walk(schema()):
        assert "$ref" not in node and "title" not in node, path
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert all(variant.get("type") != "null" for variant in node.get("anyOf", [])), path


def test_schema_carries_required_fields_enums_minimums_and_defaults():
    spec = schema()["properties"]["spec"]
    assert spec["required"] == ["model"]
    assert spec["properties"]["model"]["required"] == ["source"]
    from fleetserve.runtime.router.launch import POLICY_NAMES  # the router's own choices

    assert sorted(spec["properties"]["router"]["properties"]["policy"]["enum"]) == sorted(POLICY_NAMES)
    assert spec["properties"]["router"]["properties"]["policy"]["default"] == "cache_aware"
    assert spec["properties"]["runtime"]["properties"]["resources"]["properties"]["gpus"]["minimum"] == 0
    assert spec["properties"]["replicas"]["default"] == {}
    # the API server fills replicas.count in, so the scale subresource reads 1, not 0, when it is unset
    assert spec["properties"]["replicas"]["properties"]["count"]["default"] == 1
    conditions = schema()["properties"]["status"]["properties"]["conditions"]
    assert (conditions["x-kubernetes-list-type"], conditions["x-kubernetes-list-map-keys"]) == ("map", ["type"])
    rules = spec["properties"]["replicas"]["x-kubernetes-validations"]
    assert rules[0]["rule"] == "self.min <= self.max"


def test_names_subresources_and_printer_columns():
    generated = crd.build_crd()
    assert generated["spec"]["names"]["shortNames"] == ["fsvc"]
    assert generated["spec"]["scope"] == "Namespaced"
    version = generated["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    assert scale == {"specReplicasPath": ".spec.replicas.count", "statusReplicasPath": ".status.replicas",
                     "labelSelectorPath": ".status.selector"}
    assert version["subresources"]["status"] == {}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert set(columns) == {"Model", "Ready", "Desired", "URL", "Status", "Age"}
    props = schema()["properties"]
    for path in (".spec.model.source", ".status.readyReplicas", ".status.desiredReplicas", ".status.url",
                 ".spec.replicas.count", ".status.replicas", ".status.selector"):
        node = props
        for part in path.strip(".").split("."):
            node = node[part]["properties"] if "properties" in node.get(part, {}) else node[part]
        assert node, path


def validator() -> jsonschema.Validator:
    return jsonschema.Draft7Validator(schema())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_schema(path):
    errors = list(validator().iter_errors(yaml.safe_load(path.read_text())))
    assert errors == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda o: o["spec"].pop("model"), "model"),
        (lambda o: o["spec"]["model"].update(source="Qwen/Qwen3-8B"), "does not match"),
        (lambda o: o["spec"].update(router={"policy": "fastest"}), "fastest"),
        (lambda o: o["spec"].update(runtime={"resources": {"gpus": -1}}), "-1"),
        (lambda o: o["spec"].update(replicas={"min": -1}), "-1"),
        (lambda o: o["spec"].update(replicas={"max": 0}), "0"),
        (lambda o: o["spec"].update(router={"maxHoldSeconds": -5}), "-5"),
        (lambda o: o["spec"].update(adapters=[{"name": "Bad_Name", "source": "hf://a/b"}]), "Bad_Name"),
        (lambda o: o["spec"].update(ingress={"host": "https://llm.example.com"}), "https://"),
    ],
)
def test_schema_rejects_bad_specs(change, where):
    obj = copy.deepcopy(yaml.safe_load(EXAMPLES[0].read_text()))
    change(obj)
    errors = [str(e.message) for e in validator().iter_errors(obj)]
    assert errors and any(where in e for e in errors), errors


def test_kubernetes_validate_catches_a_typo_in_strict_mode():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replica": 1, "selector": {}, "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


REFERENCE = ROOT / "docs" / "crd-reference.md"


def test_crd_reference_is_generated_from_the_model():
    from fleetserve.operator import crd_docs

    assert REFERENCE.read_text() == crd_docs.render(), (
        "docs/crd-reference.md is stale: run `python -P -m fleetserve.operator.crd_docs > docs/crd-reference.md`")


def test_crd_reference_lists_every_field():
    text = REFERENCE.read_text()
    for part in ("spec", "status"):
        for path, _ in walk(schema()["properties"][part]):
            if path and not path.endswith(("[]", "{}")):
                assert f"`{part}{path}`" in text, f"{part}{path}"
