"""The stand-ins' own logic (label selectors, JSON patches, CRD defaults, rollout bounds) and the
demo:// model source both sides of the cluster agree on."""

from __future__ import annotations

import pytest
from apiserver import apply_defaults, apply_json_patch, matches_selector, merge_diff
from kubelet import is_project_image, rollout_bounds

from fleetserve.operator.sources import DemoLocation, SourceError, parse_source


@pytest.mark.parametrize(("selector", "expected"), [
    ("", True), ("a=1", True), ("a==1,b=2", True), ("a=2", False), ("a!=2", True), ("c", False), ("!c", True),
    ("a in (1,3)", True), ("a notin (1,3)", False), ("c notin (1)", True), ("b in (x), a=1", False),
])
def test_label_selectors(selector, expected):
    assert matches_selector({"a": "1", "b": "2"}, selector) is expected


def test_json_patch_as_kopf_sends_it_becomes_a_merge_patch():
    obj = {"metadata": {"resourceVersion": "7", "finalizers": ["x"], "gone": 1}}
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
           {"op": "add", "path": "/metadata/finalizers/-", "value": "y"}, {"op": "remove", "path": "/metadata/gone"}]
    after = apply_json_patch(obj, ops)
    assert after == {"metadata": {"resourceVersion": "7", "finalizers": ["x", "y"]}}
    assert merge_diff(obj, after) == {"metadata": {"gone": None, "finalizers": ["x", "y"]}}
    with pytest.raises(ValueError):
        apply_json_patch(obj, [{"op": "test", "path": "/metadata/resourceVersion", "value": "6"}])


def test_crd_defaults_fill_missing_fields_only():
    schema = {"properties": {"spec": {"properties": {
        "replicas": {"default": {}, "properties": {"count": {"default": 1}, "min": {"default": 1}}},
        "name": {"type": "string"}}}}}
    assert apply_defaults(schema, {"spec": {"replicas": {"count": 3}}}) == {"spec": {"replicas": {"count": 3, "min": 1}}}
    assert apply_defaults(schema, {"spec": {}}) == {"spec": {"replicas": {"count": 1, "min": 1}}}


@pytest.mark.parametrize(("strategy", "replicas", "bounds"), [
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, 2, (0, 1)),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}, 2, (1, 0)),
    ({}, 4, (1, 1)),
    ({"type": "Recreate"}, 3, (0, 3)),
])
def test_rollout_bounds_round_like_the_deployment_controller(strategy, replicas, bounds):
    assert rollout_bounds({"spec": {"strategy": strategy}}, replicas) == bounds


@pytest.mark.parametrize(("image", "runs"), [
    ("ghcr.io/fleetserve/fleetserve:0.1.0", True), ("fleetserve", True), ("registry.invalid/fleetserve-typo:1", False),
    ("localhost:5000/fleetserve@sha256:abc", True),
])
def test_only_the_project_image_runs(image, runs):
    assert is_project_image(image) is runs


def test_demo_source_means_the_same_to_the_operator_and_the_runtime():
    from fleetserve.runtime.engine.loader import resolve_model_dir
    from fleetserve.runtime.engine.types import EngineError

    location = parse_source("demo://llama-tiny")
    assert location == DemoLocation("llama-tiny") and location.basename == "llama-tiny"
    assert (resolve_model_dir(location.uri) / "config.json").exists()
    with pytest.raises(SourceError, match="demo://ARCH-SIZE"):
        parse_source("demo://gpt-huge")
    with pytest.raises(EngineError, match="demo://ARCH-SIZE"):
        resolve_model_dir("demo://gpt-huge")
