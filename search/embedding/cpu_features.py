"""Which int8 quantisation suits the CPU this process runs on.

ONNX Runtime's int8 kernels are not equally fast for every signedness. On x86-64 they are
built for unsigned activations and signed weights (U8S8): there, the signed-activation
model (S8S8) ran no faster than fp32, and U8S8 ran about 3x faster than fp32 on CPUs with
VNNI (`docs/search-quality.md`). x86 CPUs without VNNI multiply U8S8 with an instruction
that can saturate its 16-bit sums, so there the weights keep 7 bits (`reduce_range`), as
ONNX Runtime advises. ARM's dot-product kernels handle S8S8, ONNX Runtime's default.

The chosen scheme's tag (`u8s8`, `u8s8rr`, `s8s8`) is part of the int8 model id and of its
cache file name: vectors from differently quantised models are never mixed.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Any of these says the CPU has 8-bit dot-product instructions that do not saturate
# (Intel AMX implies them too).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


@dataclass(frozen=True)
class Int8Scheme:
    tag: str  # in the model id and the cache file name
    activations: str  # "u8" or "s8"
    weights: str  # "s8"
    reduce_range: bool  # 7-bit weights, against VPMADDUBSW's saturation on x86 without VNNI
    suits: str  # the CPUs it is chosen for, in words


INT8_SCHEMES = {
    scheme.tag: scheme
    for scheme in (
        Int8Scheme("u8s8", "u8", "s8", False, "x86-64 with VNNI"),
        Int8Scheme("u8s8rr", "u8", "s8", True, "x86-64 without VNNI"),
        Int8Scheme("s8s8", "s8", "s8", False, "ARM and other CPUs"),
    )
}


def int8_scheme_for(machine: str, flags: Iterable[str]) -> str:
    """The tag of the int8 scheme that suits a CPU of architecture `machine`
    (`platform.machine()`) with feature `flags` (as /proc/cpuinfo lists them)."""
    if machine.lower() in X86_MACHINES:
        return "u8s8" if has_vnni(flags) else "u8s8rr"
    return "s8s8"


def has_vnni(flags: Iterable[str]) -> bool:
    return not VNNI_FLAGS.isdisjoint(flags)


@functools.lru_cache(maxsize=1)
def this_cpu_int8_scheme() -> str:
    """The int8 scheme for the CPU this process runs on (read once per process)."""
    return int8_scheme_for(platform.machine(), cpu_flags())


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo ("flags" on x86, "Features" on ARM);
    empty where there is no such file (macOS, Windows), which picks the safe scheme."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_description() -> str:
    """The CPU's model name and int8 features in a few words, for benchmark reports."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    vnni = sorted(VNNI_FLAGS & flags)
    features = ", ".join(vnni) if vnni else "no VNNI"
    return f"{name or platform.processor() or 'unknown CPU'} ({platform.machine()}; {features})"
