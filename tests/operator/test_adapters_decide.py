"""The adapter rollout's pure core, table by table: what each pod is sent, what the status says."""

from __future__ import annotations

import pytest

from fleetserve.operator.adapters.decide import (
    ADAPTERS_LOADED,
    LOAD_FAILED,
    LOADING,
    NO_ADAPTERS,
    NO_READY_PODS,
    POD_UNREACHABLE,
    RETRY_BASE_SECONDS,
    RETRY_MAX_SECONDS,
    UNLOAD_FAILED,
    Action,
    AdapterStatus,
    Failure,
    Outcome,
    PodAdapters,
    Wanted,
    decide,
    next_failures,
    summarize,
)
from fleetserve.operator.adapters.locate import lora_path, wanted_adapters
from fleetserve.operator.sources import SourceError
from fleetserve.operator.spec import InferenceServiceSpec

SQL = ("sql", "org/sql-lora")
CHAT = ("chat", "/mnt/adapters/loras/chat")
WANTED = [SQL, CHAT]


def load(name: str, path: str) -> Action:
    return Action("load", name, path)


def unload(name: str) -> Action:
    return Action("unload", name)


@pytest.mark.parametrize(
    ("loaded", "expected"),
    [
        ({}, (load(*SQL), load(*CHAT))),  # a new pod, or one that restarted: everything
        ({"sql": "org/sql-lora"}, (load(*CHAT),)),  # missing
        ({"sql": "org/sql-lora", "chat": "/mnt/adapters/loras/chat"}, None),  # nothing to do
        ({"sql": "org/sql-lora-v1", "chat": "/mnt/adapters/loras/chat"}, (load(*SQL),)),  # source changed
        (  # extra adapters (gone from the spec, or loaded by hand) are unloaded first, in name order
            {"sql": "org/sql-lora", "chat": "/mnt/adapters/loras/chat", "zed": "/x", "old": "/y"},
            (unload("old"), unload("zed")),
        ),
        ({"old": "/y"}, (unload("old"), load(*SQL), load(*CHAT))),
    ],
)
def test_decide_per_pod(loaded, expected):
    plan = decide([Wanted(*w) for w in WANTED], [PodAdapters("p0", loaded)], {}, now=0.0)
    assert plan.get("p0") == expected


def wanted() -> list[Wanted]:
    return [Wanted(*w) for w in WANTED]


def test_an_empty_spec_unloads_everything_and_an_unreadable_pod_gets_nothing():
    pods = [PodAdapters("p0", {"sql": "a/b"}), PodAdapters("p1", None, "GET timed out")]
    assert decide([], pods, {}, 0.0) == {"p0": (unload("sql"),)}


def test_a_failed_load_waits_for_its_backoff_unless_the_path_changes():
    failures = {("p0", "sql"): Failure("org/sql-lora", "400: bad", 1, retry_at=10.0)}
    pods = [PodAdapters("p0", {"chat": CHAT[1]}), PodAdapters("p1", {"chat": CHAT[1]})]
    assert decide(wanted(), pods, failures, 5.0) == {"p1": (load(*SQL),)}  # p0 backs off, p1 does not
    assert decide(wanted(), pods, failures, 10.0) == {"p0": (load(*SQL),), "p1": (load(*SQL),)}
    changed = [Wanted("sql", "org/sql-lora-v2"), Wanted(*CHAT)]
    assert decide(changed, pods, failures, 5.0)["p0"] == (load("sql", "org/sql-lora-v2"),)


def test_failures_count_attempts_per_path_and_forget_on_success_or_when_moot():
    pods = [PodAdapters("p0", {}), PodAdapters("p1", {})]
    bad = [Outcome("p0", load(*SQL), "400: no adapter_config.json")]
    first = next_failures({}, wanted(), pods, bad, now=100.0)
    assert first == {
        ("p0", "sql"): Failure(SQL[1], "400: no adapter_config.json", 1, 100.0 + RETRY_BASE_SECONDS)
    }
    second = next_failures(first, wanted(), pods, bad, now=200.0)
    assert second[("p0", "sql")].attempts == 2
    assert second[("p0", "sql")].retry_at == 200.0 + 2 * RETRY_BASE_SECONDS
    many = {("p0", "sql"): Failure(SQL[1], "x", 30, 0.0)}
    assert next_failures(many, wanted(), pods, bad, 0.0)[("p0", "sql")].retry_at == RETRY_MAX_SECONDS
    assert next_failures(second, wanted(), pods, [Outcome("p0", load(*SQL))], 300.0) == {}  # loaded
    assert next_failures(second, wanted(), pods[1:], [], 300.0) == {}  # the pod is gone
    assert next_failures(second, wanted()[1:], pods, [], 300.0) == {}  # the adapter left the spec
    assert next_failures(second, [Wanted("sql", "other/path")], pods, [], 300.0) == {}  # a new source


def test_all_loaded_after_the_round_is_ready():
    pods = [
        PodAdapters("p0", {"sql": SQL[1]}),
        PodAdapters("p1", {"sql": SQL[1], "chat": CHAT[1], "x": "/x"}),
    ]
    outcomes = [Outcome("p0", load(*CHAT)), Outcome("p1", unload("x"))]
    report = summarize(wanted(), pods, outcomes, {})
    assert report.adapters == (AdapterStatus("sql", 2, ""), AdapterStatus("chat", 2, ""))
    assert (report.is_ready, report.reason) == (True, ADAPTERS_LOADED)
    assert report.message == "2 adapters loaded on each of 2 ready pods"


def test_a_failed_load_is_false_with_the_runtimes_message():
    pods = [PodAdapters("p0", {}), PodAdapters("p1", {})]
    message = "400: adapter_config.json not found in /mnt/adapters/loras/chat"
    outcomes = [
        Outcome("p0", load(*SQL)),
        Outcome("p0", load(*CHAT), message),
        Outcome("p1", load(*SQL)),
        Outcome("p1", load(*CHAT), message),
    ]
    failures = next_failures({}, wanted(), pods, outcomes, 0.0)
    report = summarize(wanted(), pods, outcomes, failures)
    assert report.adapters == (AdapterStatus("sql", 2, ""), AdapterStatus("chat", 0, f"pod p0: {message}"))
    assert (report.is_ready, report.reason) == (False, LOAD_FAILED)
    assert report.message == f"adapter chat on pod p0: {message} (1 more failed loads)"
    # next round: the loads back off, the status still says why
    later = summarize(
        wanted(), [PodAdapters("p0", {"sql": SQL[1]}), PodAdapters("p1", {"sql": SQL[1]})], [], failures
    )
    assert (later.reason, later.adapters[1]) == (LOAD_FAILED, AdapterStatus("chat", 0, f"pod p0: {message}"))


def test_zero_ready_pods_is_false_no_ready_pods_and_no_adapters_is_true():
    report = summarize(wanted(), [], [], {})
    assert report.adapters == (AdapterStatus("sql", 0, ""), AdapterStatus("chat", 0, ""))
    assert (report.is_ready, report.reason) == (False, NO_READY_PODS)
    empty = summarize([], [PodAdapters("p0", {})], [], {})
    assert (empty.adapters, empty.is_ready, empty.reason) == ((), True, NO_ADAPTERS)
    assert summarize([], [], [], {}).reason == NO_ADAPTERS
    idle = summarize(wanted(), [], [], {}, scaled_to_zero=True)  # the autoscaler's zero: nothing is missing
    assert (idle.is_ready, idle.reason) == (True, "ScaledToZero") and "before it turns ready" in idle.message
    assert summarize(wanted(), [PodAdapters("p0", {})], [], {}, scaled_to_zero=True).reason != "ScaledToZero"


def test_a_restarted_pod_is_reloaded_and_counts_again_once_loaded():
    full = {"sql": SQL[1], "chat": CHAT[1]}
    pods = [PodAdapters("p0", full), PodAdapters("p1", {})]  # p1 restarted: empty again
    plan = decide(wanted(), pods, {}, 0.0)
    assert plan == {"p1": (load(*SQL), load(*CHAT))}
    outcomes = [Outcome("p1", action) for action in plan["p1"]]
    assert summarize(wanted(), pods, outcomes, {}).adapters == (
        AdapterStatus("sql", 2, ""),
        AdapterStatus("chat", 2, ""),
    )


def test_an_unreadable_pod_or_a_failed_unload_is_false_with_the_reason():
    pods = [PodAdapters("p0", {"sql": SQL[1], "chat": CHAT[1]}), PodAdapters("p1", None, "GET ...: timeout")]
    report = summarize(wanted(), pods, [], {})
    assert (report.reason, report.message) == (
        POD_UNREACHABLE,
        "cannot read the adapters of pod p1: GET ...: timeout",
    )
    assert report.adapters[0] == AdapterStatus("sql", 1, "pod p1: GET ...: timeout")
    ok = [PodAdapters("p0", {"sql": SQL[1], "chat": CHAT[1], "x": "/x"})]
    failed = summarize(wanted(), ok, [Outcome("p0", unload("x"), "500: engine stopped")], {})
    assert (failed.is_ready, failed.reason) == (False, UNLOAD_FAILED)
    assert failed.message == "adapter x on pod p0: 500: engine stopped"


def test_a_load_not_sent_yet_is_loading():
    # e.g. a timeout shorter than the load: the pod loads it later, the next round sees it
    pods = [PodAdapters("p0", {"sql": SQL[1]})]
    report = summarize(wanted(), pods, [], {})
    assert (report.is_ready, report.reason, report.message) == (False, LOADING, "pod p0: not loaded yet")


def test_sources_map_to_the_paths_the_runtime_loads():
    assert lora_path("hf://org/sql-lora") == "org/sql-lora"
    assert lora_path("pvc://loras/team/chat/") == "/mnt/adapters/loras/team/chat"
    assert lora_path("pvc://loras") == "/mnt/adapters/loras"
    with pytest.raises(SourceError):
        lora_path("demo://llama-tiny")
    spec = InferenceServiceSpec.model_validate(
        {
            "model": {"source": "hf://Qwen/Qwen3-8B"},
            "adapters": [
                {"name": "sql", "source": "hf://org/sql-lora"},
                {"name": "chat", "source": "pvc://loras/chat"},
            ],
        }
    )
    assert [tuple(w) for w in wanted_adapters(spec)] == [SQL, CHAT]
