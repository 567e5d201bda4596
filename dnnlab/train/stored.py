"""Compiled programs kept on disk under dnnlab's own key, so that a rerun skips tracing and
lowering as well as compiling.

JAX's persistent cache (`train.use_compile_cache`) is keyed by the lowered program: a rerun
still traces and lowers every program to find its entry (0.6 s of a 3 s quickstart on 2 cores).
Here the key is what decides the program before it is traced (`train.program_key`: the config
but for its injected numbers, the data's shapes, the devices), the program's name, the inputs'
structure, shapes and dtypes, dnnlab's own source, the versions and flags of JAX, jaxlib and
optax, and what decides it after tracing (`_layout`: the platform and its version, the device
count and kind). A program is loaded onto the devices it was compiled for. A program found under that key is loaded as it was compiled
(`jax.experimental.serialize_executable`); one not found is compiled as `jax.jit` would, and
stored.

Only for one process on one device (the programs of a mesh are left to `jax.jit`). Off with
DNNLAB_NO_COMPILE_CACHE=1, like JAX's cache. A file that cannot be read is compiled again and
replaced.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Optional

import jax

from dnnlab.runs import atomic_write_bytes

# jax.monitoring events (tests count them)
HIT, STORED = "/dnnlab/stored/hit", "/dnnlab/stored/write"


@functools.cache
def _source() -> str:
    """A digest of dnnlab's own source, and of the versions and flags that shape a compiled program."""
    import jaxlib
    import optax

    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    for name in sorted(os.environ):
        if name.startswith(("XLA_", "JAX_", "TF_CPP", "LIBTPU")):
            h.update(f"{name}={os.environ[name]}".encode())
    h.update(repr((jax.__version__, jaxlib.__version__, optax.__version__)).encode())
    return h.hexdigest()


def _source_digest() -> str:
    """`_source`, and JAX's settings as they are now (a test or a user may change them)."""
    settings = repr(sorted((k, repr(v)) for k, v in jax.config.values.items() if "cache" not in k))
    return _source() + hashlib.sha256(settings.encode()).hexdigest()


def _layout() -> str:
    """What decides a program after it is traced, beside its inputs: the platform and its
    version, the devices (how many, of what kind, in how many processes) and the one it runs on."""
    device = jax.local_devices()[0]
    backend = device.client
    return repr((backend.platform, backend.platform_version, jax.local_device_count(), jax.device_count(),
                 jax.process_count(), device.device_kind, str(device)))


def _signature(args: tuple[Any, ...]) -> str:
    """The inputs' tree structure, and each leaf's shape, dtype and weak type."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    avals = [(tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x).__name__)), bool(getattr(x, "weak_type", False))) for x in leaves]
    return repr((str(tree), avals))


class Stored:
    """`jitted` (a `jax.jit` function) called through programs kept in `folder` under `key`."""

    def __init__(self, jitted: Callable[..., Any], name: str, key: str, folder: Path) -> None:
        self.jitted, self.name, self.key, self.folder = jitted, name, key, folder
        self.programs: dict[str, Any] = {}

    def __call__(self, *args: Any) -> Any:
        signature = _signature(args)
        program = self.programs.get(signature)
        if program is None:
            program = self.programs[signature] = self._load_or_compile(args, signature)
        return program(*args)

    def _path(self, signature: str) -> Path:
        digest = hashlib.sha256("\0".join((_source_digest(), self.key, self.name, signature, _layout())).encode())
        return self.folder / f"{self.name}-{digest.hexdigest()[:40]}.bin"

    def _load_or_compile(self, args: tuple[Any, ...], signature: str) -> Any:
        from jax.experimental import serialize_executable

        path = self._path(signature)
        if path.exists():
            try:
                payload, in_tree, out_tree, device_ids = pickle.loads(zlib.decompress(path.read_bytes()))
                # on the devices it was compiled for: by default a program is loaded onto every
                # local device, and a one-device program then expects one shard per device
                by_id = {d.id: d for d in jax.local_devices()}
                devices = [by_id[i] for i in device_ids]
                program = serialize_executable.deserialize_and_load(payload, in_tree, out_tree, execution_devices=devices)
                jax.monitoring.record_event(HIT)
                return program
            except Exception:  # damaged, or from another machine: compiled again below
                path.unlink(missing_ok=True)
        _SERVED.reset()
        program = self.jitted.lower(*args).compile()
        if _SERVED.by_jax():
            # JAX's own cache served it: an executable loaded from there and serialized again
            # is missing kernels when it is loaded once more (jaxlib 0.10), so it is not kept
            return program
        try:
            device_ids = [d.id for d in program._executable.xla_executable.local_devices()]
            blob = zlib.compress(pickle.dumps((*serialize_executable.serialize(program), device_ids)), 6)  # a fifth of the size
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, blob)
            jax.monitoring.record_event(STORED)
        except Exception:  # a program that cannot be serialized, a full disk: it still runs
            pass
        return program


class _Served(threading.local):
    """Whether JAX's persistent cache served this thread's last compilation (its cache_hits event,
    which JAX records in the compiling thread)."""

    hit = False

    def reset(self) -> None:
        _listen()
        self.hit = False

    def by_jax(self) -> bool:
        return self.hit


_SERVED = _Served()


@functools.cache
def _listen() -> None:
    def listener(name: str, **kwargs: Any) -> None:
        if name == "/jax/compilation_cache/cache_hits":
            _SERVED.hit = True

    jax.monitoring.register_event_listener(listener)


def folder() -> Optional[Path]:
    """Where programs are kept (`<cache>/programs`), or None when compiled programs are not kept."""
    from dnnlab.runs import cache_root, compiled_cache_off

    return None if compiled_cache_off() else cache_root() / "programs"


def wrap(jitted: Callable[..., Any], name: str, key: Optional[str]) -> Callable[..., Any]:
    """`jitted` through the store when it is on and `key` is given; else `jitted` itself."""
    place = folder() if key is not None else None
    return jitted if place is None else Stored(jitted, name, key, place)
