"""`fleetserve serve`: parse SGLang-named flags, load the engine, run uvicorn until Ctrl-C.

Ctrl-C (or SIGTERM) stops accepting connections, gives in-flight requests `--graceful-shutdown-timeout`
seconds to finish, cancels the rest (which aborts their engine requests), then stops the engine.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import uvicorn

from fleetserve.runtime.sim.profiles import PROFILES as SIM_PROFILES
from fleetserve.runtime.wire import DEFAULT_PORT

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5  # the default of --graceful-shutdown-timeout (the operator passes its pods' own)
NO_CHUNKING = -1  # --chunked-prefill-size -1, as in SGLang
FLASHINFER_NOT_IMPLEMENTED = ("--attention-backend flashinfer: the FlashInfer backend is not implemented yet; "
                              "use auto or torch (the torch backend runs on CPU and CUDA)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetserve serve", description="OpenAI-compatible runtime server.")
    p.add_argument("--model-path", help="local HF checkpoint dir or hub id (default: the built-in demo model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--graceful-shutdown-timeout", type=float, default=GRACEFUL_SHUTDOWN_S, metavar="SECS",
                   help="after SIGTERM or Ctrl-C, how long requests in flight may run on before they are cut "
                        "(a 503, or an error event ending the stream)")
    p.add_argument("--api-key", default=os.environ.get("FLEETSERVE_API_KEY"),
                   help="require `Authorization: Bearer KEY` (default: $FLEETSERVE_API_KEY)")
    p.add_argument("--served-model-name", nargs="+", help="name(s) clients use; the first is reported")
    p.add_argument("--chat-template", help="chat template file or inline Jinja (default: the tokenizer's)")
    p.add_argument("--context-length", type=int, help="override the model's maximum context length")
    p.add_argument("--max-running-requests", type=int, default=256)
    p.add_argument("--max-queued-requests", type=int, help="503 'queue full' beyond this many waiting requests")
    p.add_argument("--enable-cache-report", action="store_true", help="report usage.prompt_tokens_details")
    p.add_argument("--reasoning-parser", choices=["qwen3", "qwen3-thinking", "deepseek-r1", "deepseek-v3"])
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--chunked-prefill-size", type=int, default=2048,
                   help="token budget of one engine step, at least --max-running-requests; -1: no chunking "
                        "(a step can take a whole prompt)")
    p.add_argument("--max-prefill-tokens-with-decodes", type=int,
                   help="cap on the prefill tokens of a step that also decodes, which bounds the decodes' "
                        "inter-token latency beside long prompts (default: no cap)")
    p.add_argument("--kv-cache-memory-gb", type=float, help="KV cache size (default: engine's choice)")
    p.add_argument("--disable-radix-cache", action="store_true", help="turn prefix caching off")
    p.add_argument("--attention-backend", default="auto", choices=["auto", "torch", "flashinfer"],
                   help="auto and torch: the torch backend; flashinfer is not implemented yet (refused)")
    p.add_argument("--skip-server-warmup", action="store_true",
                   help="start serving without first running a dummy full-budget batch (first requests pay for it)")
    p.add_argument("--dp", type=int, default=1,
                   help="N worker processes on ports --port+1..N behind the built-in router on --port")
    sim = p.add_argument_group("worker simulator (docs/simulator.md): not a model server")
    sim.add_argument("--simulate", metavar="PROFILE", choices=sorted(SIM_PROFILES),
                     help=f"replace the model by a timed GPU cost model: {', '.join(sorted(SIM_PROFILES))}; "
                          "--model-path only gives the tokenizer")
    sim.add_argument("--simulate-time-scale", type=float, default=1.0, metavar="X",
                     help="steps sleep X times the modelled time (X > 1 runs more simulated workers per CPU)")
    p.add_argument("--is-embedding", action="store_true",
                   help="serve the model for /v1/embeddings only (detected from the checkpoint when it has "
                        "sentence-transformers files or is an encoder; this forces it)")
    lora = p.add_argument_group("LoRA adapters (docs/lora.md)")
    lora.add_argument("--enable-lora", action="store_true",
                      help="serve PEFT LoRA adapters (implied by --lora-paths); load more with POST /load_lora_adapter")
    lora.add_argument("--lora-paths", nargs="*", default=[], metavar="NAME=PATH",
                      help="adapters loaded at start: NAME=PATH (local PEFT dir or hub id); a bare PATH is its own name")
    lora.add_argument("--lora-paths-file", metavar="FILE",
                      help="JSON list of {lora_name, lora_path, pinned} loaded at start, before the server listens "
                           "(implies --enable-lora; a missing file is an empty list; a failed load is logged and "
                           "skipped)")
    lora.add_argument("--max-loras-per-batch", type=int, default=8, help="device slots: distinct adapters in one step")
    lora.add_argument("--max-loaded-loras", type=int, help="adapters held on the host at once (default: no limit)")
    lora.add_argument("--max-lora-rank", type=int,
                      help="largest rank accepted (default: the largest of --lora-paths, else 64)")
    lora.add_argument("--lora-target-modules", nargs="+", metavar="MODULE",
                      help="modules adapters may target: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj "
                           "or all (default: all)")
    return p


def lora_paths(values: list[str]) -> dict[str, str]:
    """--lora-paths NAME=PATH ... (SGLang's form); a bare PATH is named after itself."""
    paths: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name = path = value
        if not name or not path:
            raise ValueError(f"--lora-paths: {value!r} is not NAME=PATH")
        paths[name] = path
    return paths


def engine_config(args: argparse.Namespace, model_path: str) -> Any:
    from fleetserve.runtime.engine.config import EngineConfig

    return EngineConfig(
        model_path=model_path,
        dtype=args.dtype,
        device=args.device,
        page_size=args.page_size,
        max_num_batched_tokens=None if args.chunked_prefill_size == NO_CHUNKING else args.chunked_prefill_size,
        max_prefill_tokens_with_decodes=args.max_prefill_tokens_with_decodes,
        max_running_requests=args.max_running_requests,
        context_length=args.context_length,
        kv_cache_memory_gb=args.kv_cache_memory_gb,
        enable_prefix_caching=not args.disable_radix_cache,
        attention_backend=args.attention_backend,
        warm_up=not args.skip_server_warmup and args.simulate is None,
        enable_lora=args.enable_lora or bool(args.lora_paths) or bool(args.lora_paths_file),
        lora_paths=lora_paths(args.lora_paths),
        max_loras_per_batch=args.max_loras_per_batch,
        max_loaded_loras=args.max_loaded_loras,
        max_lora_rank=args.max_lora_rank,
        lora_target_modules=args.lora_target_modules,
        simulate=args.simulate,
        simulate_time_scale=args.simulate_time_scale,
    )


def server_settings(args: argparse.Namespace, model_path: str) -> Any:
    from fleetserve.runtime.server.chat_template import load_chat_template
    from fleetserve.runtime.server.state import ServerSettings

    server_args = {k: v for k, v in vars(args).items() if k != "api_key"}
    server_args["api_key_set"] = args.api_key is not None
    return ServerSettings(
        model_path=model_path,
        served_model_names=list(args.served_model_name or []),
        api_key=args.api_key or None,
        chat_template=load_chat_template(args.chat_template),
        enable_cache_report=args.enable_cache_report,
        reasoning_parser=args.reasoning_parser,
        max_running_requests=args.max_running_requests,
        max_queued_requests=args.max_queued_requests,
        server_args={**server_args, "model_path": model_path},
        simulation=simulation_info(args),
        lora_paths_file=args.lora_paths_file,
    )


def simulation_info(args: argparse.Namespace) -> dict[str, Any] | None:
    """What /get_server_info says about the simulation (None for a real model)."""
    if args.simulate is None:
        return None
    return {**SIM_PROFILES[args.simulate].describe(), "time_scale": args.simulate_time_scale}


def resolve_model_path(model_path: str | None) -> str:
    if model_path:
        return model_path
    from fleetserve.runtime.demo import default_demo_model_dir

    path = str(default_demo_model_dir())
    logger.info("no --model-path: serving the built-in demo model at %s", path)
    return path


def serves_embeddings(args: argparse.Namespace, model_path: str) -> bool:
    """`--is-embedding`, or a checkpoint that can only embed (docs/embeddings.md)."""
    from fleetserve.runtime.engine.embedding.detect import is_embedding_checkpoint
    from fleetserve.runtime.engine.loader import resolve_model_dir
    from fleetserve.runtime.engine.types import EngineError

    if args.is_embedding:
        return True
    try:
        return is_embedding_checkpoint(resolve_model_dir(model_path))
    except EngineError:
        return False  # building the engine reports why the path is unusable


def check_scheduling_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Settings under which the engine could never schedule a token, or a running request not decode."""
    if args.max_running_requests < 1:
        parser.error("--max-running-requests must be at least 1")
    if args.max_queued_requests is not None and args.max_queued_requests < 0:
        parser.error("--max-queued-requests must be 0 or more")
    budget = args.chunked_prefill_size
    if budget != NO_CHUNKING and budget < 1:
        parser.error("--chunked-prefill-size must be at least 1, or -1 for no chunking")
    if budget != NO_CHUNKING and budget < args.max_running_requests:
        parser.error(f"--chunked-prefill-size ({budget}) must be at least --max-running-requests "
                     f"({args.max_running_requests}): every running request decodes a token in each step")
    if args.page_size < 1:
        parser.error("--page-size must be at least 1")
    if args.max_prefill_tokens_with_decodes is not None and args.max_prefill_tokens_with_decodes < 1:
        parser.error("--max-prefill-tokens-with-decodes must be at least 1")
    if args.attention_backend == "flashinfer":
        parser.error(FLASHINFER_NOT_IMPLEMENTED)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_scheduling_args(parser, args)
    if args.graceful_shutdown_timeout < 0:
        parser.error("--graceful-shutdown-timeout must not be negative")
    if args.dp < 1:
        parser.error("--dp must be at least 1")
    if args.simulate_time_scale <= 0:
        parser.error("--simulate-time-scale must be positive")
    try:
        lora_paths(args.lora_paths)
        if args.lora_paths_file:
            from fleetserve.runtime.server.serving_lora import read_adapters_file

            read_adapters_file(args.lora_paths_file)  # a malformed file stops the start with its reason
    except ValueError as exc:
        parser.error(str(exc))


class _Server(uvicorn.Server):
    """uvicorn's server, announcing where it listens once the socket is bound."""

    def __init__(self, config: uvicorn.Config, model_name: str):
        super().__init__(config)
        self.model_name = model_name

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.config.host, self.config.port
            print(f"fleetserve serve: {self.model_name} listening on http://{host}:{port} "
                  f"(OpenAI base_url http://{host}:{port}/v1)", flush=True)


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_args(parser, args)
    if args.dp > 1:
        from fleetserve.runtime.server.data_parallel import run_data_parallel

        return run_data_parallel(args, argv)
    from fleetserve.runtime.engine.async_engine import AsyncEngine
    from fleetserve.runtime.engine.torch_thread import TorchThread
    from fleetserve.runtime.engine.types import EngineError
    from fleetserve.runtime.server.app import build_app
    from fleetserve.runtime.server.state import ServerState

    # every torch call (writing the demo model, loading, stepping) on one thread: see torch_thread.py
    worker = TorchThread("fleetserve-engine")
    model_path = worker.call(lambda: resolve_model_path(args.model_path))
    try:
        settings = server_settings(args, model_path)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if serves_embeddings(args, model_path):
            from fleetserve.runtime.engine.embedding.engine import AsyncEmbeddingEngine

            engine = AsyncEmbeddingEngine.from_config(engine_config(args, model_path), worker)
        else:
            engine = AsyncEngine.from_config(engine_config(args, model_path), worker)
    except EngineError as exc:  # a model that cannot be served: say why, no traceback
        print(f"fleetserve serve: error: {exc}", file=sys.stderr)
        return 1
    app = build_app(ServerState.build(engine, settings))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            access_log=args.log_level == "debug",
                            timeout_graceful_shutdown=args.graceful_shutdown_timeout)
    server = _Server(config, settings.model_name)
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
