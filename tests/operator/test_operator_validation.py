"""Checks beyond the schema: each problem is reported with a message a user can act on."""

from __future__ import annotations

import pytest

from fleetserve.operator.sources import HubLocation, PvcLocation, SourceError, parse_source
from fleetserve.operator.validation import check_spec

OK = {"model": {"source": "hf://Qwen/Qwen3-8B"}}


def test_a_valid_spec_parses():
    check = check_spec("qwen", OK)
    assert check.problems == [] and check.spec is not None
    assert check.spec.router.policy == "cache_aware"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({**OK, "replicas": {"min": 3, "max": 2}}, "spec.replicas.min (3) is greater than spec.replicas.max (2)"),
        ({"model": {"source": "s3://bucket/m"}}, "unsupported scheme s3://; supported: hf://, pvc://"),
        ({"model": {"source": "hf://just-a-name"}}, "write hf://ORG/NAME"),
        ({"model": {"source": "pvc://Bad_Claim/m"}}, "'Bad_Claim' is not a valid PersistentVolumeClaim name"),
        ({"model": {"source": "pvc://c/../etc"}}, "must not contain '..'"),
        ({**OK, "adapters": [{"name": "a", "source": "hf://o/a"}, {"name": "a", "source": "hf://o/b"}]},
         "the name 'a' is used 2 times"),
        ({**OK, "adapters": [{"name": "a", "source": "ftp://x/y"}]}, "spec.adapters[0].source"),
        ({}, "spec.model: Field required"),
        ({**OK, "router": {"policy": "fastest"}}, "spec.router.policy"),
        ({**OK, "runtime": {"gpu": 1}}, "spec.runtime.gpu: Extra inputs are not permitted"),
    ],
)
def test_problems_are_reported_not_raised(raw, expected):
    check = check_spec("qwen", raw)
    assert check.spec is None
    assert expected in check.message


def test_all_problems_are_reported_at_once():
    check = check_spec("qwen", {"model": {"source": "s3://b/m"}, "replicas": {"min": 2, "max": 1}})
    assert len(check.problems) == 2


def test_a_name_too_long_for_the_child_services_is_refused():
    assert "at most 55" in check_spec("x" * 56, OK).message
    assert check_spec("x" * 55, OK).problems == []


@pytest.mark.parametrize(
    ("uri", "location"),
    [
        ("hf://Qwen/Qwen2.5-0.5B-Instruct", HubLocation("Qwen/Qwen2.5-0.5B-Instruct")),
        ("pvc://models/qwen/8b/", PvcLocation("models", "qwen/8b")),
        ("pvc://models", PvcLocation("models", "")),
    ],
)
def test_sources_parse(uri, location):
    assert parse_source(uri) == location


def test_basename_names_the_served_model():
    assert parse_source("hf://Qwen/Qwen3-8B").basename == "Qwen3-8B"
    assert parse_source("pvc://models").basename == "models"
    with pytest.raises(SourceError, match="no scheme"):
        parse_source("Qwen/Qwen3-8B")
