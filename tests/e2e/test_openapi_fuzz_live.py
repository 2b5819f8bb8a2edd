"""schemathesis against a live `fleetserve serve` (the real engine on the demo model).

Every operation of /openapi.json gets generated requests, valid and invalid: no response may be a
5xx, every response must match its documented status, content type and schema, and schema-violating
requests must be refused. A 48-token context keeps generated requests cheap on CPU.
`positive_data_acceptance` is left out on purpose: a schema-valid request can still be a legitimate
400 that no schema can express (prompt + max_tokens beyond the context, an empty prompt).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from serve_process import ServeProcess, start_server

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("serve") / "fuzz.log"
    proc = start_server(["--context-length", "48", "--kv-cache-memory-gb", "0.25", "--max-running-requests", "64",
                         "--log-level", "warning"], log)
    yield proc
    proc.stop()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def live_schema(live_server: ServeProcess):
    return schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_live_server_honours_its_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=[checks.positive_data_acceptance], timeout=60)


def test_the_fuzzing_above_reached_the_engine(live_server: ServeProcess) -> None:
    """Runs after the fuzz test (file order): generated requests must have produced tokens."""
    metrics = httpx.get(f"{live_server.url}/metrics").text
    generated = [line for line in metrics.splitlines() if line.startswith("fleetserve:generation_tokens_total")]
    assert generated and float(generated[0].rsplit(" ", 1)[1]) > 0, generated
