"""The runtime's adapter API as the operator calls it (docs/lora.md), one pod at a time.

Each pod is addressed by its IP (``status.podIP``) and the port of its container named ``http``. Every
call has a timeout: reading ``/v1/models`` ADAPTER_READ_TIMEOUT_SECONDS, a load (which may download a
hub repository) LOAD_TIMEOUT_SECONDS. With ``spec.apiKeySecret`` the calls carry the key as a Bearer
token, as the router's do. Failures come back as messages, never as exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from fleetserve.runtime import wire

ADAPTER_READ_TIMEOUT_SECONDS = 5.0
LOAD_TIMEOUT_SECONDS = 120.0  # a hub adapter is downloaded inside the call
MAX_BODY_BYTES = 1024 * 1024
PATH_MODELS = "/v1/models"


class RuntimeCallError(Exception):
    pass


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _reason(status: int, body: bytes) -> str:
    """The runtime's error message (its error shape, or OpenAI's nested one), else the status."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        nested = payload.get("error")
        message = payload.get("message") or (nested.get("message") if isinstance(nested, dict) else None)
        if message:
            return f"{status}: {message}"
    return f"answered {status}"


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    body: Any = None,
) -> tuple[int, bytes]:
    try:
        async with session.request(
            method, url, json=body, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return response.status, await response.content.read(MAX_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise RuntimeCallError(f"{method} {url}: {type(error).__name__} {error}".rstrip()) from error


async def read_adapters(
    session: aiohttp.ClientSession, base: str, headers: Mapping[str, str]
) -> dict[str, str]:
    """The adapters a pod has loaded: name → the path it was loaded from (``/v1/models`` cards with a
    ``parent``, whose ``root`` is that path)."""
    url = f"{base}{PATH_MODELS}"
    status, body = await _call(session, "GET", url, headers, ADAPTER_READ_TIMEOUT_SECONDS)
    if status != 200:
        raise RuntimeCallError(f"GET {url} {_reason(status, body)}")
    try:
        cards = json.loads(body)["data"]
        return {card["id"]: card.get("root") or "" for card in cards if card.get("parent")}
    except (ValueError, KeyError, TypeError) as error:
        raise RuntimeCallError(f"GET {url}: not a model list ({type(error).__name__})") from error


async def load_adapter(
    session: aiohttp.ClientSession, base: str, headers: Mapping[str, str], name: str, path: str
) -> str:
    """The empty string once loaded, else why not (a 400's message says what is wrong with the adapter)."""
    url = f"{base}{wire.PATH_LOAD_LORA}"
    try:
        status, body = await _call(
            session, "POST", url, headers, LOAD_TIMEOUT_SECONDS, {"lora_name": name, "lora_path": path}
        )
    except RuntimeCallError as error:
        return str(error)
    return "" if status == 200 else _reason(status, body)


async def unload_adapter(
    session: aiohttp.ClientSession, base: str, headers: Mapping[str, str], name: str
) -> str:
    """The empty string once unloaded (or already gone: 404), else why not."""
    url = f"{base}{wire.PATH_UNLOAD_LORA}"
    try:
        status, body = await _call(
            session, "POST", url, headers, ADAPTER_READ_TIMEOUT_SECONDS, {"lora_name": name}
        )
    except RuntimeCallError as error:
        return str(error)
    return "" if status in (200, 404) else _reason(status, body)
