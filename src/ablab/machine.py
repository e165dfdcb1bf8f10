"""What a run ran on, as MLflow tags: the machine (CPU model, cores, torch's threads and the
vector instructions its kernels use) and the versions of the libraries whose kernels decide a
number's last digits (torch, MKL, oneDNN). The same params and seed give the same numbers bit
for bit on one machine; another CPU family moves them (README, "Numbers across machines")."""

from __future__ import annotations

import functools
import os
import platform
import re
import socket

import torch


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """e.g. "AMD EPYC, 2 cores, 2 threads, AVX2": torch's threads as set for this run."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}")  # fmt: skip


@functools.cache
def versions() -> str:
    """e.g. "torch 2.13.0, MKL 2024.2, oneDNN v3.12.0" (what torch was built with)."""
    config = torch.__config__.show()
    parts = [f"torch {torch.__version__}"]
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", config)
    parts += [f"MKL {mkl.group(1)}"] if mkl else []
    parts += [f"oneDNN {onednn.group(1)}"] if onednn else []
    return ", ".join(parts)


def tags() -> dict[str, str]:
    return {"ablab.host": socket.gethostname(), "ablab.machine": machine(),
            "ablab.versions": versions()}  # fmt: skip


def accelerator(setting: str) -> str:
    """`train.accelerator` resolved: "gpu" where asked or (auto) where CUDA finds a device,
    else "cpu"; a GPU asked for where there is none is an error naming the key."""
    found = torch.cuda.is_available()
    if setting == "gpu" and not found:
        from ablab.config import ConfigError

        raise ConfigError("train.accelerator: gpu, but torch finds no CUDA device here; use "
                          "auto (a GPU where there is one, else the CPU) or cpu")  # fmt: skip
    return "gpu" if setting == "gpu" or (setting == "auto" and found) else "cpu"


def device(resolved: str) -> str:
    """The `ablab.device` tag: e.g. "cpu (AMD EPYC, 2 threads)", "cuda (NVIDIA H200)"."""
    if resolved == "gpu":
        return f"cuda ({torch.cuda.get_device_name(torch.cuda.current_device())})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
