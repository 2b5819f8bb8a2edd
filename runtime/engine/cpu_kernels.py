"""Native CPU kernels: C sources in csrc/, compiled on first use with the system C compiler, loaded with ctypes.

Why: on CPU the torch backend's decode attention copies every sequence's pages into a padded tensor
and then reads that copy in SDPA — about three times the KV traffic of reading the pages in place.
`csrc/paged_decode.c` reads them in place (measured per layer, 64 sequences of 100–700 tokens,
bfloat16: 1.6 ms against 4.4 ms for gather + SDPA; float32: 1.9 ms against 9 ms).

The shared object is built with ``-O3 -march=native`` (so it is cached per CPU, compiler and source
under ``$FLEETSERVE_CACHE/kernels``) and OpenMP. Loaded after torch, it binds to the libgomp torch
already loaded (same soname), so both share one thread pool. No compiler, or a failed build, means
no kernel: `load()` returns None with one warning and the engine keeps the pure-torch path.
``FLEETSERVE_NATIVE_KERNELS=0`` turns the kernels off; ``CC`` picks the compiler.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from fleetserve.runtime.paths import cache_root

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "paged_decode.c"
ENV_SWITCH = "FLEETSERVE_NATIVE_KERNELS"
# -ffast-math is avoided on purpose: linking with it sets flush-to-zero for the whole process.
CFLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
          "-fno-signed-zeros", "-fopenmp", "-fPIC", "-shared")
LIBS = ("-lm",)
MAX_HEAD_DIM = 1024

_P, _I = ctypes.c_void_p, ctypes.c_int32
_ARGTYPES = [_P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, ctypes.c_float, _P, _P, _P]
_SYMBOLS = {torch.float32: "paged_decode_f32", torch.bfloat16: "paged_decode_bf16"}


class PagedDecodeKernel:
    """Decode attention over the paged cache, read in place (csrc/paged_decode.c)."""

    def __init__(self, lib: ctypes.CDLL):
        self._lib = lib  # keeps the library loaded
        self._functions = {}
        for dtype, name in _SYMBOLS.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = _ARGTYPES, ctypes.c_int
            self._functions[dtype] = function

    def supports(self, dtype: torch.dtype, device: torch.device) -> bool:
        return device.type == "cpu" and dtype in self._functions

    def __call__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                 kv_lens: torch.Tensor, scale: float,
                 kv_starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q [B, Hq, D]; caches [pages, page_size, Hkv, D]; page_table [B, max_pages] int32; kv_lens [B] int32 >= 1.
        kv_starts (None or [B] int32, each below its kv_len): the first token each sequence attends (a
        sliding window); None attends from token 0.

        Returns the attention output [B, Hq, D] (q's dtype) and the log-sum-exp of each row's scaled
        scores [B, Hq] (float32), which merges this part with attention over other keys.
        """
        b, hq, d = q.shape
        _, page_size, hkv, dk = k_cache.shape
        function = self._functions.get(q.dtype)
        if function is None or not {k_cache.dtype, v_cache.dtype} == {q.dtype}:
            raise TypeError(f"paged decode kernel: unsupported dtypes q={q.dtype} k={k_cache.dtype} v={v_cache.dtype}")
        if dk != d or hq % hkv or d > MAX_HEAD_DIM or page_table.dtype != torch.int32 or kv_lens.dtype != torch.int32:
            raise ValueError("paged decode kernel: inconsistent shapes or index dtypes")
        if page_table.shape[0] != b or kv_lens.shape != (b,):
            raise ValueError("paged decode kernel: page_table and kv_lens must have one row per sequence")
        if kv_starts is not None and (kv_starts.dtype != torch.int32 or kv_starts.shape != (b,)):
            raise ValueError("paged decode kernel: kv_starts must be int32 with one entry per sequence")
        tensors = (q, k_cache, v_cache, page_table, kv_lens) + (() if kv_starts is None else (kv_starts,))
        if not all(t.is_contiguous() and t.device.type == "cpu" for t in tensors):
            raise ValueError("paged decode kernel: tensors must be contiguous CPU tensors")
        out = torch.empty_like(q)
        lse = torch.empty(b, hq, dtype=torch.float32)
        if b == 0:
            return out, lse
        failed = function(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), page_table.data_ptr(),
                          kv_lens.data_ptr(), b, page_table.shape[1], hq, hkv, d, page_size, scale, out.data_ptr(),
                          lse.data_ptr(), None if kv_starts is None else kv_starts.data_ptr())
        if failed:
            raise MemoryError("paged decode kernel: out of memory for its scratch buffers")
        return out, lse


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_signature() -> str:
    """The CPU's feature flags (-march=native depends on them), or the processor name where /proc is missing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler_version(cc: str) -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout


def _build(cc: str, version: str, target: Path, extra_flags: tuple[str, ...] = ()) -> None:
    logger.info("compiling %s with %s (%s)", SOURCE.name, cc, version.splitlines()[0] if version else "?")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([cc, *CFLAGS, *extra_flags, "-o", scratch, str(SOURCE), *LIBS], capture_output=True, text=True,
                                check=False, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{cc} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
        os.replace(scratch, target)  # atomic: a concurrent loader sees the old state or the whole file
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def shared_object_path(cc: str, version: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Where the build for this source, compiler (`cc --version` output), flags and CPU is cached."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), cc.encode(), version.encode(), " ".join(CFLAGS + extra_flags + LIBS).encode(),
                 _cpu_signature().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_root() / "kernels" / f"paged_decode-{key.hexdigest()[:16]}.so"


@functools.cache
def load() -> PagedDecodeKernel | None:
    """The compiled kernel, or None (disabled, no compiler, or the build failed — warned once)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        logger.info("native CPU kernels disabled by %s=0", ENV_SWITCH)
        return None
    cc = _compiler()
    if cc is None:
        logger.warning("no C compiler found (set CC): decode attention on CPU uses the slower gather + SDPA path")
        return None
    try:
        return build(cc)
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
        logger.warning("native CPU kernel unavailable (%s): decode attention uses gather + SDPA", exc)
        return None


def build(cc: str, extra_flags: tuple[str, ...] = ()) -> PagedDecodeKernel:
    """Compiles (or reuses the cached build) and loads the kernel; raises what compiling or loading raises.

    `extra_flags` go after the usual ones: the tests build ``-mno-avx512bf16`` and ``-mno-avx512f``
    variants so every path of the source runs on a machine that has AVX512-BF16.
    """
    version = _compiler_version(cc)
    path = shared_object_path(cc, version, extra_flags)
    if not path.exists():
        _build(cc, version, path, extra_flags)
    return PagedDecodeKernel(ctypes.CDLL(str(path)))
