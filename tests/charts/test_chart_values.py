"""values.yaml, values.schema.json and the chart README agree with each other."""

from __future__ import annotations

import json

import helm_python as helm
import pytest
import yaml
from chart_helpers import CHART_DIR, CI_VALUES

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES_LINES = (CHART_DIR / "values.yaml").read_text().splitlines()


def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART_DIR))


def schema_paths(node: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, sub in node.get("properties", {}).items():
        paths.append((*prefix, name))
        if sub.get("additionalProperties") is False:
            paths += schema_paths(sub, (*prefix, name))
    return paths


def documented(path: tuple[str, ...]) -> bool:
    """The key's line in values.yaml, found by indentation, follows a `# --` comment."""
    start = 0
    for depth, key in enumerate(path):
        prefix = " " * (2 * depth) + f"{key}:"
        start = next(i for i in range(start, len(VALUES_LINES)) if VALUES_LINES[i].startswith(prefix))
    return VALUES_LINES[start - 1].strip().startswith("# --")


def test_every_key_is_documented_with_a_dash_comment():
    undocumented = [".".join(p) for p in schema_paths(SCHEMA)
                    if SCHEMA_NODE(p).get("additionalProperties") is not False and not documented(p)]
    assert undocumented == []


def SCHEMA_NODE(path: tuple[str, ...]) -> dict:
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node


def test_every_values_key_is_in_the_schema_and_every_object_is_closed():
    assert SCHEMA["additionalProperties"] is False
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) == set(SCHEMA["properties"])
    for key, node in SCHEMA["properties"].items():
        if "properties" in node:
            assert node["additionalProperties"] is False, key
            assert set(values[key]) == set(node["properties"]), key


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_pass_the_schema(path):
    chart().validate_schema(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "bad",
    [
        {"replicas": 2},
        {"operator": {"watchNamespace": ["a"]}},
        {"operator": {"logFormat": "xml"}},
        {"operator": {"watchNamespaces": ["Not_A_Namespace"]}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"replicaCount": -1},
    ],
)
def test_schema_rejects_typos_and_bad_values(bad):
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(bad)


def test_defaults_pass_the_schema():
    chart().validate_schema({})


def test_readme_documents_crd_upgrades_and_rbac():
    readme = (CHART_DIR / "README.md").read_text()
    assert "never upgrades" in readme and "kubectl apply --server-side -f" in readme
    for resource in ("inferenceservices", "deployments", "services", "serviceaccounts", "roles", "rolebindings",
                     "pods", "endpointslices", "ingresses", "events", "customresourcedefinitions", "namespaces",
                     "kopfpeerings", "clusterkopfpeerings"):
        assert f"`{resource}`" in readme, resource
