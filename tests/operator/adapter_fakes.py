"""Fake runtime pods for the adapter rollout's tests: aiohttp apps on 127.0.0.1 that implement the three
endpoints the operator calls (GET /v1/models, POST /load_lora_adapter, POST /unload_lora_adapter) the
way `fleetserve serve` answers them (docs/lora.md), and record what they were sent."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from fleetserve.runtime import wire

BASE = "qwen"


@dataclass
class FakeRuntime:
    """One pod's runtime. ``bad`` maps a lora_path to the reason a load of it is refused (a 400);
    ``api_key``, when set, is required as a Bearer token on every call."""

    loaded: dict[str, str] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)  # (path, lora_name)
    port: int = 0

    def restart(self) -> None:
        """A restarted process: no adapters."""
        self.loaded.clear()

    def _error(self, status: int, message: str) -> web.Response:
        body = {
            "object": "error",
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": status,
        }
        return web.json_response(body, status=status)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "invalid API key")
        return None

    async def models(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        cards = [{"id": BASE, "object": "model", "root": "/models/qwen", "parent": None}]
        cards += [
            {"id": name, "object": "model", "root": path, "parent": BASE}
            for name, path in self.loaded.items()
        ]
        return web.json_response({"object": "list", "data": cards})

    async def load(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        body = await request.json()
        self.calls.append((wire.PATH_LOAD_LORA, body["lora_name"]))
        if body["lora_path"] in self.bad:
            return self._error(400, self.bad[body["lora_path"]])
        self.loaded[body["lora_name"]] = body["lora_path"]
        return web.json_response({"success": True, "error_message": "", "loaded_adapters": self.loaded})

    async def unload(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        name = (await request.json())["lora_name"]
        self.calls.append((wire.PATH_UNLOAD_LORA, name))
        if self.loaded.pop(name, None) is None:
            return self._error(404, f"the LoRA adapter '{name}' is not loaded")
        return web.json_response({"success": True, "error_message": "", "loaded_adapters": self.loaded})


async def start_fake_runtime(runners: list[web.AppRunner], fake: FakeRuntime) -> FakeRuntime:
    app = web.Application()
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post(wire.PATH_LOAD_LORA, fake.load)
    app.router.add_post(wire.PATH_UNLOAD_LORA, fake.unload)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    runners.append(runner)
    fake.port = runner.addresses[0][1]
    return fake
