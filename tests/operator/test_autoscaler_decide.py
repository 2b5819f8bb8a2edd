"""The autoscaler's pure decision (operator/autoscaler/decide.py) against recorded traces.

A trace is a list of samples, one per interval: (seconds since start, [(running, waiting), ...] per
ready pod that answered, pods that failed, requests held by the routers). ``replay`` feeds them to
``decide`` as the daemon does, carrying the count and the window from one sample to the next.
"""

from __future__ import annotations

import math

import pytest

from fleetserve.operator.autoscaler.decide import (
    PodLoad,
    Policy,
    Recommendation,
    Sample,
    decide,
    deletion_costs,
    recommend,
    stabilize,
)

C, T = 4, 2  # batch cap (--max-running-requests) and targetQueueDepth of the traces
POLICY = Policy(
    min=1, max=5, target_queue_depth=T, scale_up_window=0, scale_down_window=30, default_max_running=C
)

Step = tuple[float, list[tuple[float, float]], int, float]


def sample(pods: list[tuple[float, float]], failed: int = 0, held: float = 0.0,
           finished: float | None = 0.0, routers: int = 1) -> Sample:
    loads = tuple(PodLoad(f"pod-{i}", running, waiting, C) for i, (running, waiting) in enumerate(pods))
    return Sample(loads, num_failed=failed, held=held, num_routers=routers, finished=finished)


def replay(trace: list[Step], policy: Policy = POLICY, start: int = 1) -> list[int]:
    """The count asked for after each sample; the window is seeded with the start count, as the loop does."""
    current, window = start, (Recommendation(0.0, start),)
    counts = []
    for now, pods, failed, held in trace:
        decision = decide(sample(pods, failed, held), policy, current, window, now)
        current, window = decision.replicas, decision.window
        counts.append(current)
    return counts


def spread(total: float, replicas: int) -> list[tuple[float, float]]:
    """A closed-loop load of ``total`` requests spread evenly: each pod runs up to C, the rest waits."""
    each = total / replicas
    return [(min(C, each), max(0.0, each - C))] * replicas


def closed_loop(total: float, seconds: int, start: int, policy: Policy = POLICY, rule=None) -> list[int]:
    """Clients that keep ``total`` requests in flight: the pods' load follows the count asked for."""
    current, window = start, (Recommendation(0.0, start),)
    counts = []
    for now in range(1, seconds + 1):
        if rule is None:
            decision = decide(sample(spread(total, current)), policy, current, window, float(now))
            current, window = decision.replicas, decision.window
        else:
            current = rule(spread(total, current), current)
        counts.append(current)
    return counts


def test_a_burst_scales_up_at_once_to_what_holds_the_queue():
    # 1 pod: 4 running and 20 waiting: 24 requests need ceil(24 / (4 + 2)) = 4 replicas.
    assert replay([(5, [(4, 20)], 0, 0)]) == [4]


def test_the_count_never_leaves_min_and_max():
    assert replay([(5, [(4, 200)], 0, 0)]) == [5]  # 34 would be needed; max is 5
    assert replay([(5, [(0, 0)] * 3, 0, 0), (40, [(0, 0)] * 3, 0, 0)], start=3) == [3, 1]  # min is 1
    assert replay([(5, [(4, 0)], 0, 0)], start=9) == [5]  # a count above max (max lowered) comes down at once


def test_steady_closed_loop_load_settles_and_never_oscillates():
    # 10 requests in flight: at 1 replica 6 wait; at 2 each runs 4 with 1 waiting. Scaling up to 2
    # shortens the queues, but 2 is in the band [ceil(10/6), ceil(10/4)] = [2, 3]: it stays.
    counts = closed_loop(total=10, seconds=600, start=1)
    assert counts[0] == 2 and set(counts) == {2}
    # 7 in flight: 2 replicas run everything with no queue; 1 replica would queue 3 > T.
    assert set(closed_loop(total=7, seconds=600, start=1)) == {2}
    assert closed_loop(total=7, seconds=600, start=4)[-1] == 2  # from above: down to 2 after the window


def test_pure_queue_depth_oscillates_on_the_same_load_so_the_harness_can_tell():
    def queue_rule(pods: list[tuple[float, float]], current: int) -> int:
        return max(1, min(5, math.ceil(sum(w for _, w in pods) / T)))

    counts = closed_loop(total=10, seconds=20, start=1, rule=queue_rule)
    assert len(set(counts)) > 1 and counts[:4] == [3, 1, 3, 1]


def test_a_noisy_steady_load_inside_the_band_holds_the_count():
    # Open-loop load around 9..11 requests on 2 replicas (band [2, 3]): never moves.
    noise = [9, 11, 10, 12, 9, 10, 11, 9, 12, 10] * 10
    trace = [(5.0 * (i + 1), spread(total, 2), 0, 0) for i, total in enumerate(noise)]
    assert set(replay(trace, start=2)) == {2}


def test_a_drain_scales_down_only_after_the_down_window_to_its_highest_recommendation():
    # 3 replicas, load falls from 12 to 3 to 0 requests; the down window is 30 s.
    trace = [
        (5, spread(12, 3), 0, 0),
        (10, spread(3, 3), 0, 0),
        (20, spread(0, 3), 0, 0),
        (34, spread(0, 3), 0, 0),
        (36, spread(0, 3), 0, 0),
    ]
    # from 10 s on the recommendation is 1 (3 requests fit one pod), but 12 requests at 5 s recommended
    # 3 (inside the band [2, 3]): the count waits until that one is 30 s old
    assert replay(trace, start=3) == [3, 3, 3, 3, 1]


def test_the_up_window_scales_up_to_the_lowest_recent_recommendation():
    policy = Policy(
        min=1, max=8, target_queue_depth=T, scale_up_window=10, scale_down_window=30, default_max_running=C
    )
    trace = [(5, [(4, 20)], 0, 0), (10, [(4, 8)], 0, 0), (20, [(4, 20)], 0, 0), (30, [(4, 20)], 0, 0)]
    # The lowest recommendation of the last 10 s: the seed (1 at 0 s) holds the count at 5 s; at 10 s
    # the lowest is 2 (12 requests then); at 20 s only that sample's 4 is recent enough.
    assert replay(trace, policy) == [1, 2, 4, 4]


def test_missing_samples_keep_the_count():
    trace = [(5, [(4, 20)], 0, 0), (10, [], 3, 0), (15, [], 0, 0), (20, [(4, 20)], 0, 0)]
    assert replay(trace) == [4, 4, 4, 4]
    decision = decide(sample([], failed=2), POLICY, 3, (), 5.0)
    assert (decision.replicas, decision.phase, decision.has_data) == (3, "no_data", False)
    assert "could not be read" in decision.message


def test_partly_missing_samples_never_scale_down():
    # 2 of 3 pods answered, idle: the third might be busy, so no scale-down; a queue still scales up.
    assert replay([(40, [(0, 0), (0, 0)], 1, 0)], start=3) == [3]
    assert replay([(40, [(4, 30), (4, 30)], 1, 0)], start=3) == [5]


def test_held_requests_count_as_waiting():
    # One ready pod, idle, while the routers hold 12 requests (it just became ready): 12 / 6 = 2.
    assert replay([(5, [(0, 0)], 0, 12)]) == [2]
    decision = decide(sample([(0, 0)], held=12), POLICY, 1, (), 5.0)
    assert decision.queue_depth == 12


def test_held_requests_without_ready_pods_ask_for_what_holds_them():
    policy = Policy(min=2, max=5, target_queue_depth=T, default_max_running=C)
    decision = decide(sample([], held=9), policy, 1, (), 5.0)  # 9 / 6 -> 2, and min is 2
    assert (decision.replicas, decision.phase, decision.has_data) == (2, "held_without_pods", False)
    more = decide(sample([], held=30), policy, 2, (), 5.0)  # 30 / 6, before any pod is up
    assert (more.replicas, "asking for 5" in more.message) == (5, True)
    assert decide(sample([], held=30), Policy(1, 3, T, default_max_running=C), 2, (), 5.0).replicas == 3  # max
    kept = decide(sample([], held=3), policy, 4, (), 5.0)  # never down while nothing can be measured
    assert (kept.replicas, "keeping 4" in kept.message) == (4, True)


ZERO = Policy(min=0, max=4, target_queue_depth=T, scale_up_window=0, scale_down_window=30, default_max_running=C)


def test_an_idle_service_scales_to_zero_after_a_whole_down_window():
    # Busy at t=5, then nothing in flight and nothing finished: 0 once t=5 leaves the 30 s window.
    trace = [(5, [(2, 0)], 0, 0), (10, [(0, 0)], 0, 0), (20, [(0, 0)], 0, 0), (34, [(0, 0)], 0, 0),
             (35, [(0, 0)], 0, 0)]
    assert replay(trace, ZERO) == [1, 1, 1, 1, 0]
    assert replay(trace, POLICY) == [1, 1, 1, 1, 1]  # min 1: never


def test_requests_finished_between_samples_keep_the_last_replica():
    # Short requests never caught in flight: the finished counter shows the service is in use.
    current, window = 1, (Recommendation(0.0, 1),)
    for now in range(5, 100, 5):
        decision = decide(sample([(0, 0)], finished=1), ZERO, current, window, float(now))
        current, window = decision.replicas, decision.window
        assert current == 1 and "not idle" in decision.message
    unknown = decide(sample([(0, 0)], finished=None), ZERO, 1, (), 100.0)  # e.g. a counter not read yet
    assert unknown.replicas == 1 and "unknown" in unknown.message


def test_at_zero_held_requests_start_replicas_at_once():
    idle = decide(sample([], held=0), ZERO, 0, (Recommendation(0.0, 0),), 50.0)
    assert (idle.replicas, idle.phase, idle.has_data) == (0, "scaled_to_zero", True)
    blind = decide(sample([], held=0, routers=0), ZERO, 0, (), 50.0)  # held requests unknown: stay, say so
    assert (blind.replicas, blind.phase, blind.has_data) == (0, "no_data", False)
    one = decide(sample([], held=1), ZERO, 0, (Recommendation(45.0, 0),), 50.0)
    assert (one.replicas, one.phase, one.window) == (1, "scale_from_zero", (Recommendation(50.0, 1),))
    slow_up = Policy(0, 4, T, scale_up_window=600, scale_down_window=30, default_max_running=C)
    burst = decide(sample([], held=13), slow_up, 0, (Recommendation(45.0, 0),), 50.0)
    assert burst.replicas == 3 and burst.queue_depth == 13  # ceil(13 / 6), no up window at zero
    assert decide(sample([], held=100), ZERO, 0, (), 50.0).replicas == 4  # max
    # while they start, the held requests keep the count (no pod to measure, nothing scales down)
    assert replay([(55, [], 0, 13), (60, [], 0, 13)], ZERO, start=3) == [3, 3]


def test_pods_without_the_gauge_use_the_policys_cap():
    policy = Policy(min=1, max=10, target_queue_depth=2, default_max_running=8)
    pods = (PodLoad("a", 8, 12, None),)
    assert decide(Sample(pods), policy, 1, (), 0.0).replicas == 2  # 20 / (8 + 2)
    assert decide(Sample((PodLoad("a", 8, 12, 2),)), policy, 1, (), 0.0).replicas == 5  # its own cap: 20 / 4


@pytest.mark.parametrize(
    ("load", "current", "expected"),
    [
        (0, 3, 0),
        (10, 1, 2),
        (10, 2, 2),
        (10, 3, 3),
        (10, 4, 3),
        (24, 1, 4),
        (8, 2, 2),
        (9, 2, 2),
        (13, 2, 3),
    ],
)
def test_the_band(load, current, expected):
    assert recommend(load, C, T, current) == expected


def test_stabilize_forgets_recommendations_older_than_both_windows():
    policy = Policy(min=1, max=9, target_queue_depth=T, scale_up_window=5, scale_down_window=10)
    window = (Recommendation(0, 9), Recommendation(8, 3))
    replicas, kept = stabilize(window, 20.0, 1, 4, policy)
    assert replicas == 1 and kept == (Recommendation(20.0, 1),)


def test_deletion_costs_put_the_least_loaded_pod_first():
    costs = deletion_costs((PodLoad("busy", 4, 3), PodLoad("idle", 0, 0), PodLoad("some", 2, 0)))
    assert costs == {"busy": 7, "idle": 0, "some": 2}
    assert min(costs, key=costs.__getitem__) == "idle"


def test_a_fresh_window_seeded_with_the_count_blocks_scale_down_not_scale_up():
    # What the loop does on its first sample (operator start, autoscaling turned on): seed at that time.
    seeded = (Recommendation(100.0, 3),)
    assert decide(sample(spread(24, 3)), POLICY, 3, seeded, 100.0).replicas == 4
    assert decide(sample(spread(0, 3)), POLICY, 3, seeded, 100.0).replicas == 3
    assert decide(sample(spread(0, 3)), POLICY, 3, seeded, 130.0).replicas == 1  # a down window later
