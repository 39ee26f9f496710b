"""What machine and versions a measurement ran on (recorded with every benchmark result)."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "onnx",
            "opencv-python-headless", "numpy", "nvidia-ml-py", "openvino", "nncf")
#: CPU flags (Linux names) of the units reduced precision runs on: bf16 and int8 dot products.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16",
             "amx_int8", "amx_tile", "avx512_fp16")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def _memory_mib() -> int | None:
    """The host's total memory (Linux ``/proc/meminfo``), None elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpu() -> dict[str, str] | None:
    """The first GPU nvidia-smi lists: name, total memory, driver (None without one)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    fields = [f.strip() for f in out.stdout.strip().splitlines()[0].split(",")]
    return dict(zip(("name", "memory", "driver"), fields))


def machine_info() -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    gpu = _gpu() or {}
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(),
            "memory_mib": _memory_mib(),
            "gpu": gpu.get("name"), "gpu_memory": gpu.get("memory"),
            "gpu_driver": gpu.get("driver"), "python": platform.python_version(),
            "versions": versions, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
