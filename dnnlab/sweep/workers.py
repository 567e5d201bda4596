"""A sweep's members in parallel: worker processes on this machine (`dnnlab sweep --workers N`)
or tasks on a Ray cluster (`dnnlab sweep --ray [ADDRESS]`).

A worker is `python -m dnnlab.sweep.workers SWEEP_FOLDER`: it pins itself to its share of the cores
(JAX sizes its thread pool from the affinity mask, so it must happen before JAX is imported),
sees only its own accelerator, and runs the members whose indices it reads on stdin, one at a
time, through `sweep.run_member`, the code path of a member in a sequential sweep. It answers
on stdout with one JSON line per event. The parent process alone writes sweep.json.

Nothing here imports JAX: the parent never needs it, and a worker imports it only after pinning.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from dnnlab.sweep.member import failed_record, interrupted_record
from dnnlab.tables import count

STOP_TIMEOUT = 60.0  # seconds the running members get to stop at an epoch's end and write their state
RAY_INSTALL = "pip install -e '.[ray]'"
# the variable that shows a worker only its own device, per JAX platform
VISIBLE_DEVICES = {"cuda": "CUDA_VISIBLE_DEVICES", "rocm": "HIP_VISIBLE_DEVICES"}

Event = tuple[str, int, dict[str, Any]]  # ("started", index, {"dir"}) or ("done", index, what sweep.json records)


def core_shares(cores: list[int], workers: int) -> list[list[int]]:
    """Worker i's cores: cores[i*C//N : (i+1)*C//N], at least one (workers share when N > C)."""
    c = len(cores)
    return [cores[i * c // workers : max((i + 1) * c // workers, i * c // workers + 1)] for i in range(workers)]


def accelerators() -> tuple[str, list[str]]:
    """(platform, device ids) of JAX's default backend, asked of a short-lived process so that
    this one never claims a device; ("cpu", []) where no accelerator can be present."""
    from dnnlab.sweep.grid import SweepError

    hints = ("/proc/driver/nvidia/gpus", "/dev/kfd", "/dev/accel0", "/dev/vfio")
    if os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip() == "cpu" or not any(os.path.exists(h) for h in hints):
        return "cpu", []
    probe = (
        "import jax, json; d = jax.devices(); "
        "print(json.dumps([d[0].platform, getattr(d[0].client, 'platform_version', ''), [x.id for x in d]]))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
        platform, version, ids = json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.CalledProcessError as exc:
        raise SweepError(f"--workers: JAX could not list this machine's devices: {exc.stderr.strip().splitlines()[-1:]}") from None
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as exc:
        raise SweepError(f"--workers: JAX could not list this machine's devices: {exc}") from None
    if platform == "gpu":  # JAX names CUDA and ROCm devices alike
        platform = "rocm" if "rocm" in str(version).lower() else "cuda"
    if platform == "cpu":
        return "cpu", []
    # the ids the driver knows: the parent's own CUDA_VISIBLE_DEVICES list where it has one
    visible = [v.strip() for v in os.environ.get(VISIBLE_DEVICES.get(platform, ""), "").split(",") if v.strip()]
    return platform, visible or [str(i) for i in ids]


class Pool:
    """`n` worker processes on this machine, each running one member at a time."""

    def __init__(self, folder: Path, n: int, warn: Optional[Callable[[str], None]] = None) -> None:
        from dnnlab.sweep.grid import SweepError

        warn = warn or partial(warnings.warn, stacklevel=3)

        if n < 1:
            raise SweepError(f"--workers must be at least 1, got {n}")
        self.folder, self.capacity = Path(folder).resolve(), n
        self.platform, self.devices = accelerators()
        if self.platform not in ("cpu", *VISIBLE_DEVICES):
            raise SweepError(
                f"--workers: one device per worker is supported on CPUs and CUDA or ROCm GPUs, not on {self.platform}; "
                "run the sweep without --workers (or use --ray)"
            )
        cores = sorted(os.sched_getaffinity(0))
        if self.devices:
            if n > len(self.devices):
                warn(f"--workers {n} on {len(self.devices)} {self.platform} device(s): workers share devices")
            self.cores: list[Optional[list[int]]] = [None] * n  # the accelerator does the work
        else:
            if n > len(cores):
                warn(f"--workers {n} on {count(len(cores), 'core')}: workers share cores and run slower than fewer would")
            self.cores = list(core_shares(cores, n))
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.procs: list[Optional[subprocess.Popen[str]]] = [None] * n
        self.errors: list[deque[str]] = [deque(maxlen=20) for _ in range(n)]
        self.busy: dict[int, int] = {}  # slot -> member index
        self.stopping = False

    def placement(self, slot: int) -> dict[str, Any]:
        """What sweep.json records of where a member ran."""
        out: dict[str, Any] = {"slot": slot}
        if self.cores[slot] is not None:
            out["cores"] = self.cores[slot]
        if self.devices:
            out["device"] = f"{self.platform}:{self.devices[slot % len(self.devices)]}"
        return out

    def _start(self, slot: int) -> subprocess.Popen[str]:
        env = dict(os.environ)
        if self.devices:
            env[VISIBLE_DEVICES[self.platform]] = self.devices[slot % len(self.devices)]
            if self.capacity > len(self.devices):  # sharing a device: each takes memory as it needs it
                env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        args = [sys.executable, "-m", "dnnlab.sweep.workers", str(self.folder)]
        if self.cores[slot] is not None:
            args += ["--cores", ",".join(map(str, self.cores[slot]))]
        # a session of its own: a terminal's Ctrl-C reaches the parent, which stops the workers
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, start_new_session=True, bufsize=1)
        errors = self.errors[slot]
        errors.clear()

        def read_events() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                try:
                    self.events.put((slot, json.loads(line)))
                except ValueError:
                    errors.append(line.rstrip())
            self.events.put((slot, {"event": "exit", "proc": proc}))

        def read_errors() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                errors.append(line.rstrip())

        threading.Thread(target=read_events, daemon=True).start()
        threading.Thread(target=read_errors, daemon=True).start()
        self.procs[slot] = proc
        return proc

    def submit(self, index: int) -> dict[str, Any]:
        """Start member `index` on an idle worker (started if it is not running); its placement."""
        slot = next(s for s in range(self.capacity) if s not in self.busy)
        proc = self.procs[slot]
        if proc is None or proc.poll() is not None:
            proc = self._start(slot)
        self.busy[slot] = index
        try:
            proc.stdin.write(f"{index}\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            pass  # it died: its exit event says how
        return {**self.placement(slot), "pid": proc.pid}

    def poll(self, timeout: float) -> list[Event]:
        """The events of the members since the last call, waiting up to `timeout` for the first."""
        out: list[Event] = []
        try:
            item = self.events.get(timeout=timeout)
            while True:
                out += self._event(*item)
                item = self.events.get_nowait()
        except queue.Empty:
            return out

    def _event(self, slot: int, event: dict[str, Any]) -> Iterator[Event]:
        index = self.busy.get(slot)
        if event["event"] == "started" and index == event["index"]:
            yield "started", index, {"dir": event["dir"]}
        elif event["event"] == "done" and index == event["index"]:
            del self.busy[slot]
            yield "done", index, event["result"]
        elif event["event"] == "exit":
            proc = event["proc"]
            code = proc.wait()
            if self.procs[slot] is not proc:
                return  # a process this slot no longer runs (it ended idle and was replaced)
            self.procs[slot] = None
            if index is not None:
                del self.busy[slot]
                if self.stopping:  # stopped by us before it could say so (still starting up)
                    yield "done", index, interrupted_record()
                    return
                tail = "\n".join(list(self.errors[slot])[-8:])
                how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                yield "done", index, failed_record(f"its worker process {how} during the member" + (f":\n{tail}" if tail else ""))

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[Event]:
        """SIGTERM to every worker: a running member ends interrupted at its next stop point and
        writes its state. The events until they exit (or `timeout`; then they are killed)."""
        self.stopping = True
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        out: list[Event] = []
        deadline = time.monotonic() + timeout
        while any(p is not None for p in self.procs) and time.monotonic() < deadline:
            out += self.poll(timeout=0.2)
        return out

    def close(self) -> None:
        for proc in self.procs:
            if proc is None:
                continue
            if self.stopping and proc.poll() is None:
                proc.kill()  # it did not stop within STOP_TIMEOUT: its member restarts from its last state
            elif proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.close()  # an idle worker ends at the end of its input
                except OSError:
                    pass
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [None] * self.capacity


# ---------------------------------------------------------------- Ray


def import_ray(address: str = "local") -> Any:
    """The `ray` module, once a cluster at `address` (HOST:PORT or ray://HOST:PORT) answers;
    SweepError naming the install command when Ray is missing, or the address when nothing
    answers there, or something that is not a Ray cluster (ray.init would wait for minutes)."""
    from dnnlab.sweep.grid import SweepError

    try:
        import ray
    except ImportError:
        raise SweepError(f"--ray needs Ray, an optional extra: {RAY_INSTALL}") from None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        try:
            grpc = _speaks_grpc(host.strip("[]"), int(port), timeout=10)
        except OSError as exc:
            raise SweepError(
                f"--ray {address}: no Ray cluster answers there ({exc}); start one with `ray start --head` "
                "and give the address it prints, or give --ray alone for a local cluster"
            ) from None
        if not grpc:  # ray.init would wait there for minutes
            raise SweepError(
                f"--ray {address}: something answers there, but not a Ray cluster (Ray speaks gRPC; this is another "
                "service: the dashboard's port, 8265, is not the cluster's); give the address `ray start --head` "
                "prints (port 6379 by default), or --ray alone for a local cluster"
            )
    return ray


def _speaks_grpc(host: str, port: int, timeout: float) -> bool:
    """Whether the server at host:port answers as gRPC (HTTP/2) does, as Ray's GCS and Ray Client
    do: its first frame after the client's connection preface is SETTINGS (RFC 9113, 3.4). An
    HTTP/1 server answers with text, a silent one not within `timeout`: neither is Ray."""
    import socket

    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # preface, empty SETTINGS
        head = b""
        try:
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
        except (socket.timeout, ConnectionError):
            return False
    return head[3] == 4


class RayPool:
    """The members as Ray tasks, one `ray_member` task each (one CPU, or one GPU if the cluster
    has them); at most `capacity` at once, so that only running members say running."""

    def __init__(self, folder: Path, address: str, workers: Optional[int] = None, warn: Optional[Callable[[str], None]] = None) -> None:
        from dnnlab.sweep.grid import SweepError

        ray = self.ray = import_ray(address)
        if workers is not None and workers < 1:
            raise SweepError(f"--workers must be at least 1, got {workers}")
        self.folder, self.started = Path(folder).resolve(), False
        if not ray.is_initialized():
            # ray.init sets a SIGTERM handler of its own: the CLI's stays in charge of this process
            handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            local = address in ("", "local")
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
            if local:  # a new cluster on this machine, even where another one runs
                cores = len(os.sched_getaffinity(0))
                options["num_cpus"] = workers or cores
                if workers and workers > cores:
                    (warn or partial(warnings.warn, stacklevel=3))(f"--workers {workers} on {count(cores, 'core')}: Ray tasks share cores and run slower than fewer would")
            try:
                ray.init(address="local" if local else address, **options)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError: all say the address is wrong
                raise SweepError(f"--ray {address}: cannot start or join the Ray cluster: {exc}") from None
            finally:
                for s, handler in handlers.items():
                    if handler is not None:
                        signal.signal(s, handler)
            self.started = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.capacity = workers or max(gpus or int(resources.get("CPU", 1)), 1)
        self.task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(ray_member)
        self.refs: dict[Any, int] = {}

    def submit(self, index: int) -> dict[str, Any]:
        self.refs[self.task.remote(str(self.folder), index)] = index
        return {"ray": True}

    def poll(self, timeout: float) -> list[Event]:
        if not self.refs:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        return [("done", self.refs.pop(ref), self._result(ref)) for ref in ready]

    def _result(self, ref: Any) -> dict[str, Any]:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.TaskCancelledError:
            return interrupted_record()
        except exceptions.RayError as exc:  # the task's process crashed, its node was lost, ...
            return failed_record(f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[Event]:
        """Cancel the running tasks: each stops at its next stop point and writes its state."""
        refs = list(self.refs)
        for ref in refs:
            self.ray.cancel(ref)
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout) if refs else ([], [])
        return [("done", self.refs.pop(ref), self._result(ref)) for ref in ready]

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


_CACHE: dict[str, Any] = {}  # the datasets a worker process (or a Ray worker) has loaded


def _soft_stop(signum: int, frame: Any) -> None:
    """A stop signal (or `ray.cancel`) takes effect at the next stop point, never inside XLA."""
    from dnnlab import interrupt

    if not interrupt.request():
        raise KeyboardInterrupt


def ray_member(folder: str, index: int) -> dict[str, Any]:
    """A Ray task: member `index` of the sweep in `folder` (a path every node sees), through
    `sweep.run_member`. Returns what sweep.json records of it."""
    import socket

    from dnnlab import interrupt
    from dnnlab.sweep.grid import Sweep
    from dnnlab.sweep.member import run_member

    job = Sweep.open(Path(folder))
    member = next(m for m in job.members if m["index"] == index)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _soft_stop) if main else None  # ray.cancel interrupts the main thread
    result: Optional[dict[str, Any]] = None
    try:
        with interrupt.deferred():
            result = run_member(Path(folder), job.manifest, member, _CACHE)
    except KeyboardInterrupt:  # a member that had finished when told to stop stays finished
        result = result or interrupted_record()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    return {**result, "worker": {"host": socket.gethostname(), "pid": os.getpid()}}


# ---------------------------------------------------------------- the worker process


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m dnnlab.sweep.workers SWEEP_FOLDER [--cores 0,1]`: run the members whose indices come
    on stdin, one per line, until stdin ends or a stop signal; one JSON event per line on stdout."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dnnlab.sweep.workers")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cores", default="", help="pin to these cores (before JAX is imported)")
    args = parser.parse_args(argv)
    if args.cores:
        os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})
    if "jax" in sys.modules:
        raise SystemExit("dnnlab.sweep.workers: JAX was imported before the worker was pinned to its cores")

    # the events have stdout to themselves: anything else printed goes to stderr
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    stopped: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopped.append(signum)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)  # a second signal must not break the cleanup
        _soft_stop(signum, frame)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    _watch_parent(os.getppid())

    from dnnlab import interrupt
    from dnnlab.sweep.grid import Sweep
    from dnnlab.sweep.member import run_member

    def send(**event: Any) -> None:
        try:
            events.write(json.dumps(event) + "\n")
        except OSError:
            pass  # the parent is gone; the run folder holds the outcome for --resume

    try:
        for line in sys.stdin:
            index = int(line)
            job = Sweep.open(args.folder)  # the parent saved it before sending the index
            member = next(m for m in job.members if m["index"] == index)
            folder: list[str] = [member["dir"]] if member.get("dir") else []

            def announce(path: Path, folder: list[str] = folder, index: int = index) -> None:
                folder[:] = [path.name]
                send(event="started", index=index, dir=path.name)

            result: Optional[dict[str, Any]] = None
            try:
                with interrupt.deferred():
                    result = run_member(args.folder, job.manifest, member, _CACHE, announce)
            except KeyboardInterrupt:  # a member that had finished when told to stop stays finished
                result = result or interrupted_record(folder[0] if folder else None)
            send(event="done", index=index, result=result)
            if stopped or result["status"] == "interrupted":
                break
    except KeyboardInterrupt:  # stopped while idle
        pass
    try:
        events.close()
    except OSError:
        pass
    return 128 + stopped[0] if stopped else 0


def _watch_parent(parent: int) -> None:
    """A worker whose parent died (killed, so it could not stop them) stops as if told to."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
