"""--api-key: which paths need the key, and the 401 shape (TestClient over FakeEngine, a test double)."""

from __future__ import annotations

import pytest

from fleetserve.runtime.server.auth import OPEN_PATHS

KEY = "sk-test-123"
PROTECTED = [("GET", "/v1/models"), ("GET", "/v1/models/fake-model"), ("POST", "/v1/chat/completions"),
             ("POST", "/v1/completions"), ("POST", "/v1/embeddings"), ("GET", "/get_model_info"),
             ("GET", "/get_server_info"), ("POST", "/flush_cache"), ("GET", "/openapi.json")]


@pytest.fixture
def client(make_client):
    return make_client(api_key=KEY)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_protected_paths_refuse_a_missing_or_wrong_key(client, method: str, path: str, headers: dict) -> None:
    response = client.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    body = response.json()
    assert body["object"] == "error" and body["code"] == 401 and body["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_right_key_passes(client) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/v1/models", headers=headers).status_code == 200
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_probe_and_scrape_paths_stay_open(client, path: str) -> None:
    assert {"/health", "/health_generate", "/metrics"} == OPEN_PATHS
    assert client.get(path).status_code == 200


def test_no_key_configured_means_no_check(make_client) -> None:
    assert make_client().get("/v1/models").status_code == 200
