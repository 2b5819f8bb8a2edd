"""The adapters loaded on the host, by name; each load gets a new version (a reload is a new adapter)."""

from __future__ import annotations

from fleetserve.runtime.engine.lora.adapter import AdapterError, AdapterNotFoundError, LoRAAdapter


class AdapterRegistry:
    def __init__(self, max_loaded: int | None, max_pinned: int):
        self.max_loaded = max_loaded
        self.max_pinned = max_pinned
        self.adapters: dict[str, LoRAAdapter] = {}
        self._next_version = 1

    def next_version(self) -> int:
        version = self._next_version
        self._next_version += 1
        return version

    def check_add(self, name: str, pinned: bool) -> None:
        """Raises AdapterError when loading `name` would exceed --max-loaded-loras or the pinnable slots."""
        others = [a for n, a in self.adapters.items() if n != name]
        if self.max_loaded is not None and len(others) >= self.max_loaded:
            raise AdapterError(f"{len(others)} LoRA adapters are loaded, the most this server holds "
                               f"(--max-loaded-loras {self.max_loaded}); unload one first")
        if pinned and sum(a.pinned for a in others) >= self.max_pinned:
            raise AdapterError(f"at most {self.max_pinned} adapters can be pinned "
                               f"(--max-loras-per-batch minus one slot kept for the others)")

    def add(self, adapter: LoRAAdapter) -> LoRAAdapter | None:
        """Registers `adapter`; returns the adapter it replaces under the same name, if any."""
        self.check_add(adapter.name, adapter.pinned)
        old = self.adapters.get(adapter.name)
        self.adapters[adapter.name] = adapter
        return old

    def remove(self, name: str) -> LoRAAdapter:
        adapter = self.adapters.pop(name, None)
        if adapter is None:
            raise AdapterNotFoundError(f"no LoRA adapter named {name!r} is loaded")
        return adapter

    def find(self, ref: str) -> LoRAAdapter | None:
        """The adapter called `ref`, or else the one loaded from the path `ref` (SGLang's lora_path)."""
        adapter = self.adapters.get(ref)
        if adapter is not None:
            return adapter
        return next((a for a in self.adapters.values() if a.path == ref), None)

    @property
    def names(self) -> list[str]:
        return list(self.adapters)
