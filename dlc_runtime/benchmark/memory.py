"""Peak host and device memory of one benchmark configuration.

Host: a process's resident peak only grows, so in one process every configuration after the first
would inherit the peaks of those before it. A configuration's honest peak is read in a fresh
process that runs only it: :func:`run_isolated` starts a Python process (:func:`main`) that calls
the target function and reports its result with the child's peak (:func:`peak_rss_mb`: Linux's
``VmHWM``; ``ru_maxrss`` would inherit the parent's). That is everything an analysis process holds
(interpreter, libraries, model, buffers), the figure a user sees running ``dlc analyze``. It
costs one process start and one model load; the benchmark has the child do one of its timed
runs, so no run is added.

Device (``cuda`` only; None on the CPU), measured in the same child by :class:`DeviceMemory`:
- the process's used device memory, CUDA context and every library's allocations included,
  sampled by a background thread (its maximum): from NVML where ``pynvml`` imports (every 20 ms),
  else from ``nvidia-smi --query-compute-apps`` (every 250 ms);
- where neither reads a figure for this process (a container whose process ids differ from the
  driver's finds no row for its pid) and torch has initialised CUDA: the peak of torch's caching
  allocator, ``torch.cuda.max_memory_reserved`` (reset at the start when torch was already
  initialised), which leaves out the context and any other library's memory;
- otherwise None, never another process's figure.
The process figure comes first because torch may hold only part of it: device frames are torch
tensors whichever backend (onnxruntime-gpu, TensorRT) computes on them.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A probe returns the memory it reads in MiB, or None when it cannot read it now.
Probe = Callable[[], "float | None"]
#: The child's result line on stdout (libraries may print other lines there).
RESULT_MARK = "DLC-BENCHMARK-RESULT "


def _status_mb(field: str) -> float | None:
    """A memory line of Linux's ``/proc/self/status`` in MiB, None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (MiB).

    On Linux this is ``VmHWM``: ``ru_maxrss`` there also counts the parent's resident memory at
    the time it started this process (the kernel carries the old address space's high-water
    mark across exec), so a small child of a large benchmark would inherit its parent's peak.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def current_rss_mb() -> float | None:
    """This process's resident memory now (MiB; Linux ``/proc``), None elsewhere."""
    return _status_mb("VmRSS")


def parse_compute_apps(text: str, pid: int) -> float | None:
    """MiB used by ``pid`` in ``nvidia-smi --query-compute-apps=pid,used_memory
    --format=csv,noheader`` output (summed over GPUs); None when it has no readable row."""
    total, found = 0.0, False
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) != pid:
            continue
        value, _, unit = fields[1].partition(" ")
        try:
            used = float(value)
        except ValueError:  # "[N/A]" (e.g. Windows WDDM, some containers)
            continue
        total += used / 1024 if unit.strip().lower() == "kib" else \
            used * 1024 if unit.strip().lower() == "gib" else used
        found = True
    return round(total, 1) if found else None


def nvidia_smi_probe(pid: int) -> Probe:
    def probe() -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return parse_compute_apps(out.stdout, pid) if out.returncode == 0 else None
    return probe


def nvml_probe(pid: int) -> Probe | None:
    """A probe through NVML (``pynvml``), None where it does not import or initialise."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                   for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # missing module, no driver, or NVML's own error classes
        return None

    def probe() -> float | None:
        used = [p.usedGpuMemory for h in handles
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                if p.pid == pid and p.usedGpuMemory is not None]
        return round(sum(used) / 2**20, 1) if used else None
    return probe


def process_device_probe(pid: int | None = None) -> tuple[str, Probe] | None:
    """(source, probe) of the process's used device memory: NVML, else nvidia-smi, else None."""
    pid = os.getpid() if pid is None else pid
    probe = nvml_probe(pid)
    if probe is not None:
        return "nvml", probe
    if shutil.which("nvidia-smi") is not None:
        return "nvidia-smi", nvidia_smi_probe(pid)
    return None


class PeakSampler:
    """Calls ``probe`` every ``interval`` seconds in a background thread (and once at start
    and at stop) and keeps the largest reading; ``peak`` is None when none was readable.
    A probe that raises stops the sampling, keeping what it read before."""

    def __init__(self, probe: Probe, interval: float = 0.02) -> None:
        self.probe, self.interval = probe, interval
        self.peak: float | None = None
        self.readings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> bool:
        try:
            value = self.probe()
        except Exception:
            return False
        if value is not None:
            self.readings += 1
            self.peak = value if self.peak is None else max(self.peak, value)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval) and self._read():
            pass

    def start(self) -> PeakSampler:
        self._read()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._read()
        return self.peak

    def __enter__(self) -> PeakSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _torch_cuda() -> Any:
    """torch, where it is imported and has initialised CUDA (never imported here)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    return torch if cuda is not None and cuda.is_initialized() else None


class DeviceMemory:
    """Peak device memory of the code run inside ``with DeviceMemory(device) as mem:``
    (see the module docstring): ``mem.peak_mb`` and ``mem.source`` ("nvml", "nvidia-smi",
    "torch"), both None on the CPU or where nothing could be read.

    Args:
        device: the run's device ("cpu", "cuda", "cuda:N").
        probe: (source, probe) of the process's device memory; default
            :func:`process_device_probe`.
    """

    def __init__(self, device: str, probe: tuple[str, Probe] | None = None) -> None:
        self.device = device
        self.on_gpu = device.startswith("cuda")
        self._probe = probe
        self._sampler: PeakSampler | None = None
        self.peak_mb: float | None = None
        self.source: str | None = None

    def __enter__(self) -> DeviceMemory:
        if not self.on_gpu:
            return self
        torch = _torch_cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats(self.device)
        probe = self._probe or process_device_probe()
        if probe is not None:
            self.source = probe[0]
            # nvidia-smi is a process per reading: sampled slower, so as not to load the CPU
            # under the run it measures (device buffers stay allocated for many readings).
            interval = 0.25 if self.source == "nvidia-smi" else 0.02
            self._sampler = PeakSampler(probe[1], interval).start()
        return self

    def __exit__(self, *exc: object) -> None:
        sampled = self._sampler.stop() if self._sampler is not None else None
        if not self.on_gpu:
            return
        torch = _torch_cuda()
        if sampled is not None:
            self.peak_mb = sampled
        elif torch is not None:
            self.peak_mb = round(torch.cuda.max_memory_reserved(self.device) / 2**20, 1)
            self.source = "torch"
        else:
            self.source = None


@dataclass
class Isolated:
    """What :func:`run_isolated` brings back: the target's (JSON) result and the child's
    peaks."""

    result: Any
    peak_rss_mb: float
    peak_device_mb: float | None
    device_source: str | None


def _error(module: str, kind: str, message: str) -> Exception:
    """The child's exception, rebuilt here: its own class where it imports and takes a message
    (the runtime's errors, ValueError, the training package's for the baseline), else a
    RuntimeError naming it."""
    try:
        cls = getattr(importlib.import_module(module), kind)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    except Exception:  # an unimportable module, a class wanting other arguments
        pass
    return RuntimeError(f"{kind}: {message}")


def run_isolated(target: str, kwargs: dict[str, Any], device: str = "cpu",
                 timeout: float | None = None) -> Isolated:
    """Runs ``module:function(**kwargs)`` in a fresh Python process and returns its result
    (JSON-serialisable) with the child's peak host and device memory.

    The child imports the same ``dlc_runtime`` as this process. An exception raised there is
    raised here again, with its class and message (see :func:`_error`; the child's traceback
    is lost); a child that dies gives a RuntimeError with the end of its stderr.
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder holding dlc_runtime
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    request = json.dumps({"target": target, "kwargs": kwargs, "device": device})
    proc = subprocess.run([sys.executable, "-c",
                           "from dlc_runtime.benchmark.memory import main; main()"],
                          input=request, capture_output=True, text=True, env=env,
                          timeout=timeout)
    lines = [line[len(RESULT_MARK):] for line in proc.stdout.splitlines()
             if line.startswith(RESULT_MARK)]
    if not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:]) or f"exit code {proc.returncode}"
        raise RuntimeError(f"the measurement process of {target} failed: {tail}")
    out = json.loads(lines[-1])
    if "error" in out:
        raise _error(**out["error"])
    return Isolated(out["result"], out["peak_rss_mb"], out["peak_device_mb"],
                    out["device_source"])


def _child(request: dict[str, Any]) -> dict[str, Any]:
    module, _, name = request["target"].partition(":")
    function = getattr(importlib.import_module(module), name)
    try:
        with DeviceMemory(request["device"]) as device:
            result = function(**request["kwargs"])
    except Exception as err:  # raised again in the parent (run_isolated)
        return {"error": {"module": type(err).__module__, "kind": type(err).__name__,
                          "message": str(err)}}
    return {"result": result, "peak_rss_mb": peak_rss_mb(), "peak_device_mb": device.peak_mb,
            "device_source": device.source}


def main() -> None:
    """The child of :func:`run_isolated`: a request on stdin, the result line on stdout."""
    print(RESULT_MARK + json.dumps(_child(json.loads(sys.stdin.read()))), flush=True)
