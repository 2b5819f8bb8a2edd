"""The router's HTTP app: the proxied OpenAI endpoints and its own /v1/models, /health, /metrics, /workers.

Wired once in `Router`: worker set, state sync, balancer, metrics, proxy and discovery share one
aiohttp client session (no automatic decompression, so answers pass through byte for byte).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetserve.runtime import wire
from fleetserve.runtime.router.balancer import Balancer
from fleetserve.runtime.router.block_index import BlockIndex
from fleetserve.runtime.router.config import RouterConfig
from fleetserve.runtime.router.discovery import EndpointSliceWatch, own_namespace
from fleetserve.runtime.router.errors import error_response
from fleetserve.runtime.router.metrics import RouterMetrics
from fleetserve.runtime.router.policies import build_policy
from fleetserve.runtime.router.prompts import PromptEncoder
from fleetserve.runtime.router.proxy import Proxy
from fleetserve.runtime.router.state_sync import StateSync
from fleetserve.runtime.router.workers import WorkerSet, WorkerState

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({wire.PATH_HEALTH, wire.PATH_METRICS})
KEEPALIVE_SECS = 3.0
PROXIED = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None


@dataclass
class Router:
    config: RouterConfig
    workers: WorkerSet = field(init=False)
    session: aiohttp.ClientSession = field(init=False)
    sync: StateSync = field(init=False)
    balancer: Balancer = field(init=False)
    metrics: RouterMetrics = field(init=False)
    proxy: Proxy = field(init=False)
    watch: EndpointSliceWatch | None = None

    async def start(self) -> None:
        cfg = self.config
        self.workers = WorkerSet(lambda: BlockIndex(cfg.eviction_interval_secs, cfg.max_tree_size))
        # keep-alive shorter than the workers' (uvicorn closes idle connections after 5 s), so that a
        # pooled connection is rarely reused just as the worker closes it
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECS)
        self.session = aiohttp.ClientSession(auto_decompress=False, connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=None))
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        encoder = PromptEncoder.from_directory(cfg.tokenizer_path, cfg.page_size) if cfg.tokenizer_path else None
        self.sync = StateSync(self.workers, self.session, headers, interval=cfg.cache_poll_interval_secs,
                              probe_interval=cfg.health_check_interval_secs,
                              failure_threshold=cfg.health_failure_threshold, encoder=encoder)
        self.workers.on_added = self.sync.start
        self.workers.on_removed = self.sync.stop
        policy = build_policy(cfg.policy, cfg.cache_aware, cfg.seed)
        self.balancer = Balancer(self.workers, policy)
        self.metrics = RouterMetrics(self.workers)
        self.proxy = Proxy(cfg, self.workers, self.balancer, self.metrics, self.session, lambda: self.sync.encoder)
        if cfg.k8s_service:
            namespace = cfg.k8s_namespace or own_namespace()
            self.watch = EndpointSliceWatch(cfg.k8s_service, namespace, cfg.k8s_port_name, self.workers.sync,
                                            asyncio.get_running_loop())
            self.watch.start()
            logger.info("discovering workers from the EndpointSlices of %s/%s", namespace, cfg.k8s_service)
        else:
            self.workers.sync(dict.fromkeys(cfg.worker_urls, "ready"))

    async def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        await self.sync.close()
        await self.session.close()

    # -- handlers ---------------------------------------------------------------------------------

    @web.middleware
    async def check_key(self, request: web.Request, handler: Any) -> web.StreamResponse:
        key = self.config.api_key
        if key and request.path not in OPEN_PATHS and request.method != "OPTIONS":
            token = bearer_token(request)
            if token is None or not hmac.compare_digest(token.encode(), key.encode()):
                self.metrics.rejected.labels("unauthorized").inc()
                response = error_response(401, "missing API key" if token is None else "invalid API key")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        if self.workers.routable() or self.config.is_holding_on:
            return web.json_response({"status": "ok", "ready_workers": len(self.workers.routable())})
        return error_response(503, "no worker is ready")

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_workers(self, request: web.Request) -> web.Response:
        return web.json_response({"workers": [worker_info(w) for w in self.workers.workers.values()]})

    async def _worker_json(self, worker: WorkerState, path: str, request: web.Request) -> tuple[int, Any]:
        auth = request.headers.get("Authorization")
        try:
            async with self.session.get(worker.url + path, headers={"Authorization": auth} if auth else None,
                                        timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status, await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, None

    async def list_models(self, request: web.Request) -> web.Response:
        """The union of the ready workers' /v1/models (the base model and every loaded adapter)."""
        answers = await asyncio.gather(*(self._worker_json(w, "/v1/models", request) for w in self.workers.routable()))
        cards: dict[str, Any] = {}
        for _, answer in answers:
            for card in (answer or {}).get("data") or []:
                if isinstance(card, dict) and "id" in card:
                    cards.setdefault(card["id"], card)
        return web.json_response({"object": "list", "data": list(cards.values())})

    async def retrieve_model(self, request: web.Request) -> web.Response:
        path = "/v1/models/" + request.match_info["model_id"]
        for worker in self.workers.routable():
            status, answer = await self._worker_json(worker, path, request)
            if status == 200:
                return web.json_response(answer)
        return error_response(404, f"the model '{request.match_info['model_id']}' does not exist", "model")

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self.check_key], client_max_size=64 << 20)
        for path, kind in PROXIED.items():
            app.router.add_post(path, functools.partial(self.proxy.handle, kind=kind))
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model_id:.+}", self.retrieve_model)
        app.router.add_get(wire.PATH_HEALTH, self.health)
        app.router.add_get(wire.PATH_METRICS, self.metrics_endpoint)
        app.router.add_get("/workers", self.list_workers)
        return app


def worker_info(w: WorkerState) -> dict[str, Any]:
    return {"url": w.url, "phase": w.phase, "in_flight": w.in_flight, "load": w.load,
            "reported_running": w.reported_running, "reported_waiting": w.reported_waiting,
            "adapters": sorted(w.adapters), "cached_blocks": len(w.cache.reported),
            "predicted_blocks": len(w.cache.predicted), "supports_cache_state": w.supports_cache_state}
