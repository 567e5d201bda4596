"""Devices and processes: the data-parallel mesh of `train.devices`, and runs over several
processes or hosts (`dnnlab run --distributed`).

One program runs on every device: XLA's SPMD partitioner splits each global batch along the
1-D mesh axis "data", keeps the parameters and optimizer state replicated and inserts the
gradient all-reduce (`jax.sharding`). With several processes (`jax.distributed`), the mesh
spans every process's devices; each process holds the same seeded data and shuffles it the
same way, so no example is shipped between hosts. Only process 0 writes the run folder and
prints. A watch thread ends a process whose peer stopped giving signs of life, so that a run
never hangs in a collective (docs/scale.md).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from dnnlab.config import Config
from dnnlab.runs import EXIT_BAD_INPUT, EXIT_FAILED

DATA_AXIS = "data"
ENV_COORDINATOR = "DNNLAB_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "DNNLAB_NUM_PROCESSES"
ENV_PROCESS_ID = "DNNLAB_PROCESS_ID"
ENV_PEER_TIMEOUT = "DNNLAB_PEER_TIMEOUT"  # seconds without a sign of life after which a peer is lost
PEER_TIMEOUT_S = 60.0
INIT_TIMEOUT_S = 300  # how long processes wait for each other at start (jax.distributed's default)
_KEY = "dnnlab/alive"


class DeviceError(Exception):
    """A device or process setting that cannot be used: `str()` is the message, `code` the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Processes:
    index: int = 0
    count: int = 1
    watch: Optional["_Watch"] = None
    finished: bool = False
    alone: bool = False  # inside `alone()`: this process's devices only


_PROCESSES = _Processes()  # this process's place in the run (set by `initialize`)


def _devices() -> list[Any]:
    import jax

    return jax.local_devices() if _PROCESSES.alone else jax.devices()


def _count() -> int:
    return 1 if _PROCESSES.alone else _PROCESSES.count


# ---------------------------------------------------------------- the devices of one run


def resolve_devices(cfg: Config) -> int:
    """How many devices `cfg` trains on (`train.devices`), checked against this machine and
    against data.batch_size; DeviceError when they do not fit."""
    available = _devices()
    platform = available[0].platform
    setting = cfg.train.devices
    count = len(available) if setting == "auto" else int(setting)
    if count > len(available):
        hint = f" (on the CPU, JAX_NUM_CPU_DEVICES={count} makes {count})" if platform == "cpu" else ""
        raise DeviceError(
            f"train.devices: {count}, but {_where()} has {len(available)} {platform} device"
            f"{'s' if len(available) != 1 else ''}; set it to at most {len(available)} or auto{hint}"
        )
    if _count() > 1 and count != len(available):
        raise DeviceError(
            f"train.devices: {count}; a run over {_count()} processes uses every process's devices "
            f"({len(available)}): set train.devices to auto"
        )
    batch = cfg.data.batch_size
    if count > 1 and batch % count:
        lower, upper = batch - batch % count, batch + count - batch % count
        options = f"{lower} or {upper}" if lower > 0 else str(upper)
        raise DeviceError(
            f"data.batch_size: {batch} does not divide by the {count} devices of train.devices "
            f"({setting}); each device takes an equal share of every batch: use a multiple of {count}, e.g. "
            f"{options}, or set train.devices"
        )
    return count


def _where() -> str:
    return "this machine" if _count() == 1 else f"the {_count()} processes together"


def data_mesh(count: int) -> Optional[Any]:
    """The 1-D mesh ("data",) over the first `count` devices, or None for one device in one
    process (no mesh: the one-device programs stay exactly as they are)."""
    import jax

    if count == 1 and _count() == 1:
        return None
    # Auto axes: the sharding of the batch is given by constraints and propagated by XLA
    # (make_mesh's default since jax 0.9 is Explicit, which would type every array's sharding)
    return jax.make_mesh(
        (count,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=_devices()[:count]
    )


def replicated(mesh: Any) -> Any:
    """The sharding of what every device holds whole: parameters, optimizer state, the data."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec())


def split(mesh: Any) -> Any:
    """The sharding of a batch: its leading axis split over the mesh."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def upload(mesh: Any, array: Any) -> Any:
    """A host array, whole on every device of `mesh`. Every process holds the same array (the
    same seeded split), so each places it on its own devices and nothing crosses the network;
    the jitted functions then pick each device's share of a batch (`constrain`)."""
    import jax
    import numpy as np

    host = np.asarray(array)
    return jax.make_array_from_process_local_data(replicated(mesh), host, host.shape)


def constrain(mesh: Any) -> Callable[[Any], Any]:
    """Inside a jitted function: lay an array out as a batch split along the mesh."""
    import jax

    sharding = split(mesh)
    return lambda a: jax.lax.with_sharding_constraint(a, sharding)


def describe(count: int) -> str:
    """summary.json's `device`: platform and kind, and the count when it is above one
    ("cpu", "cpu x4", "gpu: NVIDIA H100 80GB HBM3 x8")."""
    d = _devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    name = d.platform if kind == d.platform else f"{d.platform}: {kind}"
    return name if count == 1 else f"{name} x{count}"


# ---------------------------------------------------------------- several processes


def process_index() -> int:
    return _PROCESSES.index


def process_count() -> int:
    """The processes that train together (1 inside `alone()`)."""
    return _count()


@contextmanager
def alone() -> Iterator[None]:
    """Train on this process's devices only, whatever the run's processes do: process 0's
    linear reference, after the run's own training."""
    before, _PROCESSES.alone = _PROCESSES.alone, True
    try:
        yield
    finally:
        _PROCESSES.alone = before


def is_writer() -> bool:
    """Whether this process writes the run folder and prints: process 0, or a run of one process."""
    return _PROCESSES.index == 0


def settings(
    coordinator: Optional[str], num_processes: Optional[int], process_id: Optional[int]
) -> tuple[Optional[str], Optional[int], Optional[int]]:
    """The flags, else DNNLAB_COORDINATOR / DNNLAB_NUM_PROCESSES / DNNLAB_PROCESS_ID; what
    neither gives stays None (jax.distributed then detects it: Slurm, Open MPI)."""
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES, 1)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID, 0)
    if coordinator is not None and (":" not in coordinator or not coordinator.rsplit(":", 1)[1].isdigit()):
        raise DeviceError(f"--coordinator / {ENV_COORDINATOR}: {coordinator!r} is not HOST:PORT (e.g. node01:12345)")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise DeviceError(f"--process-id {process_id}: must be 0 to {num_processes - 1} for {num_processes} processes")
    return coordinator, num_processes, process_id


def _env_int(name: str, low: int) -> Optional[int]:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise DeviceError(f"{name}={text!r}: must be a whole number >= {low}")
    return value


def peer_timeout() -> float:
    """Seconds without a sign of life after which a peer process counts as lost
    (DNNLAB_PEER_TIMEOUT, default 60)."""
    text = os.environ.get(ENV_PEER_TIMEOUT, "").strip()
    if not text:
        return PEER_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise DeviceError(f"{ENV_PEER_TIMEOUT}={text!r}: must be a number of seconds > 0")
    return value


def initialize(
    coordinator: Optional[str] = None, num_processes: Optional[int] = None, process_id: Optional[int] = None
) -> tuple[int, int]:
    """Join the processes of a run (`jax.distributed.initialize`) before any JAX work, and start
    the watch for lost peers. Returns (this process's index, the process count).

    Raises DeviceError when the settings are wrong or the processes do not meet within
    INIT_TIMEOUT_S seconds.
    """
    coordinator, num_processes, process_id = settings(coordinator, num_processes, process_id)
    timeout = peer_timeout()
    import jax

    met = threading.Event()
    threading.Thread(target=_give_up_unless, args=(met, coordinator, num_processes), daemon=True).start()
    try:
        jax.distributed.initialize(
            coordinator, num_processes, process_id,
            # JAX aborts the process when these run out (a C++ fatal error): the messages of
            # `_give_up_unless` and of the watch come first, these are the backstops
            initialization_timeout=INIT_TIMEOUT_S + 30,
            heartbeat_timeout_seconds=int(max(2 * timeout, timeout + 30)),
        )
    except Exception as exc:  # ValueError (nothing detected), RuntimeError, JaxRuntimeError (no coordinator)
        detail = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise DeviceError(
            f"cannot start the distributed run: {detail}; give --coordinator HOST:PORT, --num-processes N and "
            f"--process-id I (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}), or run under Slurm "
            f"or Open MPI (docs/scale.md)",
        ) from None
    finally:
        met.set()
    _PROCESSES.index, _PROCESSES.count = jax.process_index(), jax.process_count()
    if _PROCESSES.count > 1:
        from jax._src import (
            distributed as jax_distributed,  # its key-value store: no public accessor
        )

        _PROCESSES.watch = _Watch(jax_distributed.global_state.client, _PROCESSES.index, _PROCESSES.count, timeout)
        _PROCESSES.watch.start()
    return _PROCESSES.index, _PROCESSES.count


def _give_up_unless(met: threading.Event, coordinator: Optional[str], count: Optional[int]) -> None:
    """End this process when the run's processes have not met within INIT_TIMEOUT_S seconds."""
    if not met.wait(INIT_TIMEOUT_S):
        where = f"at {coordinator}" if coordinator else "(the coordinator JAX detected)"
        print(
            f"error: the {count or 'detected'} processes of the distributed run did not all meet {where} within "
            f"{INIT_TIMEOUT_S} s: check that every process started, with the same --coordinator and "
            f"--num-processes, and that process 0's host and port can be reached",
            file=sys.stderr, flush=True,
        )
        os._exit(EXIT_FAILED)


def on_peer_lost(callback: Optional[Callable[[str], None]]) -> None:
    """Call `callback(message)` before this process exits because a peer was lost (process 0
    marks its run folder failed)."""
    if _PROCESSES.watch is not None:
        _PROCESSES.watch.callback = callback


def finished() -> None:
    """This process trained to the end, as every process does: tell the others, and stop
    watching them (the processes then meet once more at exit, in jax.distributed's shutdown)."""
    if _PROCESSES.watch is not None:
        _PROCESSES.watch.finish("done")
        _PROCESSES.finished = True


def leave(code: int) -> None:
    """End this process of a multi-process run now, with `code`, unless it trained to the end
    (`finished`): the others, still in the training's collectives, read that it left and end
    too, instead of waiting for it at the shutdown barrier (or it for them). No-op otherwise."""
    watch = _PROCESSES.watch
    if watch is None or _PROCESSES.finished:
        return
    watch.finish("left")
    time.sleep(2 * watch.interval + 0.2)  # the others read it before process 0's key-value store goes
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Watch(threading.Thread):
    """Each process bumps a counter in jax.distributed's key-value store every second and reads
    the others'. A peer whose counter has not moved for `timeout` seconds is lost, as is the
    store itself (process 0, its host); then this process says which and exits non-zero: the
    collectives it waits in would otherwise wait for ever."""

    def __init__(self, client: Any, index: int, count: int, timeout: float) -> None:
        super().__init__(name="dnnlab-peer-watch", daemon=True)
        self.client, self.index, self.count, self.timeout = client, index, count, timeout
        self.interval = min(1.0, timeout / 4)
        self.callback: Optional[Callable[[str], None]] = None
        self.stop = threading.Event()
        self.lock = threading.Lock()  # a beat never overwrites the last word

    def finish(self, how: str) -> None:
        """Stop beating and watching; the others read `how`: done (trained to the end) or left."""
        with self.lock:
            self.stop.set()
            try:
                self.client.key_value_set(f"{_KEY}/{self.index}", how, allow_overwrite=True)
            except Exception:
                pass  # the others, if they still wait, find this process lost: it is

    def run(self) -> None:
        start = time.monotonic()
        seen: dict[int, tuple[Optional[str], float]] = {p: (None, start) for p in range(self.count) if p != self.index}
        beat = 0
        while not self.stop.wait(0 if beat == 0 else self.interval):
            beat += 1
            with self.lock:
                if self.stop.is_set():
                    return
                try:
                    self.client.key_value_set(f"{_KEY}/{self.index}", str(beat), allow_overwrite=True)
                except Exception as exc:
                    self.lost(f"lost process 0, the coordinator of the {self.count} processes ({_first_line(exc)})")
            now = time.monotonic()
            for peer, (value, since) in list(seen.items()):
                current = _try_get(self.client, f"{_KEY}/{peer}")
                if current == "done":
                    del seen[peer]
                elif current == "left" and not self.stop.is_set():
                    self.lost(f"process {peer} of {self.count} left the run before the end of training "
                              f"(interrupted, or it failed: see its output)")
                    return
                elif current != value:
                    seen[peer] = (current, now)
                elif now - since > self.timeout and not self.stop.is_set():
                    self.lost(f"lost process {peer} of {self.count}: no sign of life for {self.timeout:g} s "
                              f"(it died, or its host is unreachable)")
                    return

    def lost(self, message: str) -> None:
        message = f"{message}; stopping this process ({self.index}) rather than waiting in a collective for ever"
        if self.callback is not None:
            try:
                self.callback(message)
            except Exception:
                pass
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(EXIT_FAILED)


def _try_get(client: Any, key: str) -> Optional[str]:
    try:
        return client.key_value_try_get(key)
    except Exception:  # NOT_FOUND: the peer has not beaten yet
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
