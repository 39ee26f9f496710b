"""``dlc_runtime.benchmark.memory``: the nvidia-smi parser, the sampler, device memory on the
CPU, and a configuration's peak read in a fresh process.

The functions above the tests are the targets the fresh processes run (this module is imported
there by name, so it imports nothing heavy)."""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest

from dlc_runtime.benchmark.memory import DeviceMemory, PeakSampler, parse_compute_apps, \
    peak_rss_mb, process_device_probe, run_isolated
from dlc_runtime.errors import VideoError

TESTS = Path(__file__).resolve().parent


def allocate(mib: int) -> int:
    """Touches ``mib`` MiB (every page resident), then frees them."""
    block = np.ones(mib * 2**20, dtype=np.uint8)
    return int(block[:: 4096].sum() // 256)


def fail(kind: str) -> None:
    if kind == "video":
        raise VideoError("clip.mp4 is too short")
    if kind == "value":
        raise ValueError("bad value")
    raise KeyError("no such key")


def wait_for(condition, seconds: float = 10.0) -> None:
    """Until ``condition()`` holds (a sampler thread's readings), failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the sampler thread took no readings"
        time.sleep(0.001)


@pytest.fixture
def importable(monkeypatch):
    """Lets the fresh processes import this module."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p))


SMI = """\
4021, 1536 MiB
{pid}, 812 MiB
{pid}, 300 MiB
99, [N/A]
"""


def test_nvidia_smi_rows_of_our_pid_are_summed():
    assert parse_compute_apps(SMI.format(pid=777), 777) == 1112.0  # one process on two GPUs
    assert parse_compute_apps(SMI.format(pid=777), 4021) == 1536.0
    assert parse_compute_apps(SMI.format(pid=777), 99) is None  # [N/A]: unreadable, not 0
    assert parse_compute_apps(SMI.format(pid=777), 12345) is None  # not listed
    assert parse_compute_apps("No running processes found\n", 777) is None
    assert parse_compute_apps("5, 2 GiB\n", 5) == 2048.0


def test_sampler_keeps_the_largest_reading():
    readings = itertools.chain([None, 100.0, 350.0, None, 200.0], itertools.repeat(120.0))
    with PeakSampler(lambda: next(readings), interval=0.001) as sampler:
        wait_for(lambda: sampler.readings >= 6)
    assert sampler.peak == 350.0


def test_sampler_stops_on_a_failing_probe_and_keeps_what_it_read():
    calls = iter([50.0, 80.0])

    def probe():
        return next(calls)  # StopIteration on the third call

    sampler = PeakSampler(probe, interval=0.001).start()
    sampler._thread.join(timeout=5)
    assert not sampler._thread.is_alive() and sampler.stop() == 80.0
    assert PeakSampler(lambda: None).start().stop() is None


def test_device_memory_is_none_on_the_cpu():
    with DeviceMemory("cpu", probe=("nvml", lambda: 999.0)) as mem:
        allocate(1)
    assert mem.peak_mb is None and mem.source is None


def test_device_memory_is_the_process_probes_maximum():
    values = iter([500.0, 1800.0, 900.0])
    with DeviceMemory("cuda", probe=("nvidia-smi", lambda: next(values, 700.0))) as mem:
        wait_for(lambda: mem._sampler.readings >= 4)
    assert mem.peak_mb == 1800.0 and mem.source == "nvidia-smi"


def test_device_memory_without_a_reading_is_none_not_zero():
    """No row for this process, and torch has not initialised CUDA here."""
    import torch

    if torch.cuda.is_initialized():
        pytest.skip("torch holds CUDA in this process: its allocator would give a figure")
    with DeviceMemory("cuda", probe=("nvml", lambda: None)) as unreadable:
        pass
    assert unreadable.peak_mb is None and unreadable.source is None


def _cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (this torch sees none)")
    return torch


@pytest.mark.gpu
def test_device_memory_falls_back_to_torchs_allocator():
    """Where no process probe reads a figure (a container's pid), torch's peak is taken:
    256 MiB allocated and freed inside the block show in it."""
    torch = _cuda()
    with DeviceMemory("cuda", probe=("nvml", lambda: None)) as mem:
        block = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
        del block
    assert mem.source == "torch" and mem.peak_mb >= 256


@pytest.mark.gpu
def test_device_memory_of_this_process_on_a_gpu():
    """The real probe (NVML or nvidia-smi) sees a 512 MiB block held during the run."""
    torch = _cuda()
    torch.zeros(1, device="cuda")  # a CUDA context: the process is listed from now on
    torch.cuda.empty_cache()  # the block below is new device memory, not torch's cache
    found = process_device_probe()
    before = found[1]() if found is not None else None
    if before is None:
        pytest.skip("neither NVML nor nvidia-smi lists this process (container pid namespace)")
    with DeviceMemory("cuda") as mem:
        block = torch.ones(512 * 2**20, dtype=torch.uint8, device="cuda")
        time.sleep(0.6)  # a few readings, nvidia-smi's included
        del block
    assert mem.source == found[0] and mem.peak_mb >= before + 500


def test_a_fresh_process_reports_its_own_peak(importable):
    """The child's peak holds what it allocated and nothing of this process's (which only
    grows): 400 MiB show in the child that allocated them, not in the next one."""
    big = run_isolated("test_benchmark_memory:allocate", {"mib": 400})
    small = run_isolated("test_benchmark_memory:allocate", {"mib": 1})
    assert big.result == 400 and small.result == 1
    assert big.peak_rss_mb - small.peak_rss_mb > 350
    assert small.peak_device_mb is None and small.device_source is None
    allocate(300)
    assert run_isolated("test_benchmark_memory:allocate", {"mib": 1}).peak_rss_mb < \
        peak_rss_mb() - 250


def test_errors_in_the_fresh_process_are_raised_here(importable):
    with pytest.raises(VideoError, match="clip.mp4 is too short"):
        run_isolated("test_benchmark_memory:fail", {"kind": "video"})
    with pytest.raises(ValueError, match="bad value"):
        run_isolated("test_benchmark_memory:fail", {"kind": "value"})
    with pytest.raises(KeyError, match="no such key"):
        run_isolated("test_benchmark_memory:fail", {"kind": "key"})
    with pytest.raises(RuntimeError, match="measurement process of no_such_module:f failed"):
        run_isolated("no_such_module:f", {})
