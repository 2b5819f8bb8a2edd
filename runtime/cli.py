"""The `fleetserve` command: picks a subcommand and hands it the rest of the command line.

Each subcommand owns its argument parser in its own module and is imported only when chosen,
so `fleetserve operator` and `fleetserve router` never import torch.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with a `main(argv: list[str]) -> int | None`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("fleetserve.runtime.server.launch", "run the OpenAI-compatible runtime server"),
    "router": ("fleetserve.runtime.router.launch", "run the prefix-cache-, load- and LoRA-aware router"),
    "operator": ("fleetserve.operator.main", "run the kopf operator"),
    "bench": ("fleetserve.runtime.bench.main", "benchmark an OpenAI-compatible server"),
    "demo-model": ("fleetserve.runtime.demo.cli", "write the built-in demo model as a HF checkpoint"),
}


def usage() -> str:
    lines = ["usage: fleetserve COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `fleetserve COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"fleetserve: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
