"""LoRA metrics, read from the engine's stats at scrape time (docs/metrics.md).

Per adapter: requests running and waiting (label `lora_name`), and every loaded adapter whether or
not it has requests (value 1), so residency is visible before traffic arrives. Plus vLLM's
`lora_requests_info` gauge, which dashboards and gateways already parse: labels
`running_lora_adapters`, `waiting_lora_adapters` (comma-separated names) and `max_lora`, value the
scrape's Unix time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from fleetserve.runtime.engine.types import EngineStats
from fleetserve.runtime.wire import (
    METRIC_LORA_LOADED,
    METRIC_LORA_REQUESTS_INFO,
    METRIC_LORA_REQUESTS_RUNNING,
    METRIC_LORA_REQUESTS_WAITING,
)

LABELS = ("model_name", "lora_name")


def lora_metrics(stats: EngineStats, model_name: str) -> Iterator[Metric]:
    """Nothing when LoRA is off (`max_loras` 0)."""
    if not stats.max_loras:
        return
    names = sorted(set(stats.loaded_adapters) | set(stats.lora_running) | set(stats.lora_waiting))
    running = GaugeMetricFamily(METRIC_LORA_REQUESTS_RUNNING, "Requests in the running batch, per LoRA adapter.",
                                labels=LABELS)
    waiting = GaugeMetricFamily(METRIC_LORA_REQUESTS_WAITING, "Requests waiting to be scheduled, per LoRA adapter.",
                                labels=LABELS)
    loaded = GaugeMetricFamily(METRIC_LORA_LOADED, "LoRA adapters loaded now (1 each).", labels=LABELS)
    for name in names:
        running.add_metric([model_name, name], stats.lora_running.get(name, 0))
        waiting.add_metric([model_name, name], stats.lora_waiting.get(name, 0))
    for name in stats.loaded_adapters:
        loaded.add_metric([model_name, name], 1)
    info = GaugeMetricFamily(METRIC_LORA_REQUESTS_INFO, "Running and waiting LoRA adapters (vLLM's gauge).",
                             labels=("running_lora_adapters", "waiting_lora_adapters", "max_lora"))
    info.add_metric([",".join(sorted(stats.lora_running)), ",".join(sorted(stats.lora_waiting)),
                     str(stats.max_loras)], time.time())
    yield from (running, waiting, loaded, info)
