"""The numeric environment of a run: what decides its floating-point numbers besides the code.

Two runs of the same configuration and seed give bit-identical numbers only when they use the same
kernels: NumPy's and SciPy's BLAS (OpenBLAS picks its kernel by CPU, overridable with
``OPENBLAS_CORETYPE``), torch's ATen vector code (``ATEN_CPU_CAPABILITY``), torch's MKL
(``MKL_CBWR`` / ``MKL_ENABLE_INSTRUCTIONS``) and oneDNN (``ONEDNN_MAX_CPU_ISA``), the same thread
counts and the same library versions. ``numeric_environment()`` records all of that; ``key()``
keeps the part that must match for a re-run to be expected bit-identical; ``pins()`` gives the
environment variables that put a fresh process on the recorded kernels; ``STANDARD`` is the
portable set of pins that every x86-64 CPU with AVX2 (x86-64-v3) can reproduce.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

#: environment variables that select kernels or thread counts of the numeric libraries
KNOBS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
         "ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "ONEDNN_MAX_CPU_ISA",
         "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "CUBLAS_WORKSPACE_CONFIG")

#: the leaderboard's numeric environment: kernels that any x86-64 CPU with AVX2 runs, one thread
#: everywhere; ``submit`` runs under it and ``verify`` reproduces it (see docs/leaderboard.md)
STANDARD = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
            "ONEDNN_MAX_CPU_ISA": "AVX2"}

#: CPU flags (``/proc/cpuinfo``) that decide which kernels a CPU can run
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_tile", "amx_bf16")


def cpu() -> dict[str, Any]:
    model, vendor, flags = None, None, set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                name = name.strip()
                if name == "model name" and model is None:
                    model = value.strip()
                elif name == "vendor_id" and vendor is None:
                    vendor = value.strip()
                elif name == "flags" and not flags:
                    flags = set(value.split())
                if model is not None and vendor is not None and flags:
                    break
    except OSError:
        pass
    return {"model": model or platform.processor() or None, "vendor": vendor, "machine": platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags]}


def cpu_vendor(numeric: dict[str, Any]) -> str | None:
    """The CPU vendor a numeric environment was recorded on (``GenuineIntel``, ``AuthenticAMD``;
    read from the model name where an older record has no ``vendor``), or None if unknown."""
    info = numeric.get("cpu") or {}
    if info.get("vendor"):
        return str(info["vendor"])
    model = str(info.get("model") or "")
    if re.search(r"\bAMD\b", model):
        return "AuthenticAMD"
    if re.search(r"\bIntel\b", model):
        return "GenuineIntel"
    return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken: recorded as unknown
        return None


def blas_libraries() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process (NumPy's and SciPy's OpenBLAS; torch links MKL
    statically, see ``torch_numerics``) with the kernel (core type) each one uses."""
    try:
        import numpy  # noqa: F401  (load the libraries to be described)
        import scipy.linalg  # noqa: F401
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    out = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        path = Path(str(info.get("filepath") or ""))
        owner = next((p[:-5] for p in reversed(path.parts) if p.endswith(".libs")), path.parent.name)
        out.append({"owner": owner, "library": path.name,
                    **{k: info.get(k) for k in ("internal_api", "version", "architecture", "threading_layer",
                                                "num_threads")}})
    return sorted(out, key=lambda d: (str(d["owner"]), str(d["library"])))


def torch_numerics() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {}
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", config)
    onednn = re.search(r"MKL-DNN (v[^\s]+)", config)
    return {"version": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "blas": blas.group(1) if blas else None, "mkl": mkl.group(1) if mkl else None,
            "onednn": onednn.group(1) if onednn else None, "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads()}


def numeric_environment() -> dict[str, Any]:
    """Everything that decides this process's floating-point results, as recorded in a result's
    ``environment.numeric``."""
    return {"cpu": cpu(), "python": platform.python_version(), "numpy": _version("numpy"),
            "scipy": _version("scipy"), "blas": blas_libraries(), "torch": torch_numerics(),
            "env": {k: os.environ.get(k) for k in KNOBS}}


def key(numeric: dict[str, Any]) -> dict[str, Any]:
    """The part of a numeric environment that must be equal for a re-run to be bit-identical:
    library versions, each BLAS's kernel, torch's kernels and the variables that cap them. The CPU
    model is not part of it: pinned kernels compute the same on any CPU that runs them. Where
    MKL's or oneDNN's instruction set is not capped, it follows the CPU, so the CPU's flags are."""
    env = numeric.get("env") or {}
    torch_info = numeric.get("torch") or {}
    out: dict[str, Any] = {
        "python": numeric.get("python"), "numpy": numeric.get("numpy"), "scipy": numeric.get("scipy"),
        "blas": [{k: b.get(k) for k in ("owner", "library", "internal_api", "version", "architecture", "num_threads")}
                 for b in numeric.get("blas") or []],
        "torch": {k: torch_info.get(k) for k in ("version", "cpu_capability", "blas", "mkl", "onednn", "num_threads")},
        "env": {k: env.get(k) for k in KNOBS if k != "CUBLAS_WORKSPACE_CONFIG"},
    }
    if not (env.get("MKL_CBWR") or env.get("MKL_ENABLE_INSTRUCTIONS")) or not (
            env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")):
        out["cpu_isa"] = list((numeric.get("cpu") or {}).get("isa") or [])
    return out


def _flat(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(node, list) and node and all(isinstance(v, dict) and "owner" in v for v in node):
        out = {}
        for v in node:
            out.update(_flat({k: x for k, x in v.items() if k != "owner"}, f"{path}[{v['owner']}]"))
        return out
    return {path: node}


def differences(recorded: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """Where two numeric environments' keys differ, one phrase each (empty: the same)."""
    a, b = _flat(key(recorded)), _flat(key(here))
    # OPENBLAS_CORETYPE only selects the kernel, which each BLAS's architecture records: a run that let
    # OpenBLAS pick Haswell computes what a run pinned to Haswell computes (the key keeps the variable,
    # for the entries' file-name hashes)
    for flat in (a, b):
        flat.pop("env.OPENBLAS_CORETYPE", None)
    return [f"{k} recorded {a.get(k)!r}, here {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


#: the CPU flag each kernel needs (OpenBLAS core types, ATen capabilities, MKL / oneDNN caps)
NEEDS = {"haswell": "avx2", "zen": "avx2", "skylakex": "avx512f", "cooperlake": "avx512_bf16",
         "sapphirerapids": "amx_tile", "sandybridge": "avx", "avx2": "avx2", "avx512": "avx512f",
         "avx512_core": "avx512f", "avx512_core_vnni": "avx512_vnni", "avx512_core_bf16": "avx512_bf16",
         "avx512_core_amx": "amx_tile", "avx": "avx", "sse4_2": "sse4_2", "sse41": "sse4_2"}


def unavailable(numeric: dict[str, Any], here: dict[str, Any] | None = None) -> list[str]:
    """The recorded kernels this CPU cannot run, one phrase each (empty: all can be pinned here)."""
    flags = set((here or {"cpu": cpu()})["cpu"].get("isa") or [])
    wanted = {f"OpenBLAS core type {v}": v for v in {b.get("architecture") for b in numeric.get("blas") or []} if v}
    cap = (numeric.get("torch") or {}).get("cpu_capability")
    if cap:
        wanted[f"torch CPU capability {cap}"] = cap
    for knob in ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = (numeric.get("env") or {}).get(knob)
        if value:
            wanted[f"{knob}={value}"] = value.split(",")[0]
    out = []
    for what, kernel in sorted(wanted.items()):
        need = NEEDS.get(str(kernel).lower())
        if need and need not in flags:
            out.append(f"{what} needs the CPU flag {need}, which this CPU lacks")
    return out


def drop_unrunnable_blas_core(environ: dict[str, str] | None = None, warn=None) -> str | None:
    """Unset ``OPENBLAS_CORETYPE`` when it names a kernel this CPU cannot execute (e.g. ``SkylakeX``
    without AVX-512): OpenBLAS would run it and the process would die of an illegal instruction at
    the first large dot product. Called on import of ``benchmark`` and ``leaderboard``, before NumPy
    loads OpenBLAS, so that every process of the product (and the children it starts) runs on the
    kernel OpenBLAS picks for the CPU instead; the run's recorded numeric environment then names that
    kernel. Returns the one-line warning given (None when nothing was dropped or the CPU's flags are
    unknown)."""
    env = os.environ if environ is None else environ
    core = env.get("OPENBLAS_CORETYPE")
    need = NEEDS.get(str(core).lower()) if core else None
    flags = set(cpu()["isa"])
    if not need or not flags or need in flags:
        return None
    env.pop("OPENBLAS_CORETYPE", None)
    message = (f"warning: OPENBLAS_CORETYPE={core} needs the CPU flag {need}, which this CPU lacks; ignored "
               f"(OpenBLAS would stop on an illegal instruction), using the kernel OpenBLAS picks for this CPU")
    (warn or (lambda m: print(m, file=sys.stderr)))(message)
    return message


def pins(numeric: dict[str, Any]) -> dict[str, str | None]:
    """Environment variables for a fresh process to use the recorded kernels: every knob as
    recorded (``None``: unset), and OpenBLAS's core type set to the kernel the run reported."""
    env = dict(numeric.get("env") or {})
    out: dict[str, str | None] = {k: env.get(k) for k in KNOBS}
    arch = {b.get("architecture") for b in numeric.get("blas") or [] if b.get("internal_api") == "openblas"}
    arch.discard(None)
    if len(arch) == 1:
        out["OPENBLAS_CORETYPE"] = arch.pop()
    return out


def is_standard(numeric: dict[str, Any] | None) -> bool:
    """Whether a run was made under ``STANDARD`` (the pins in effect and the kernels they select)."""
    if not isinstance(numeric, dict):
        return False
    env = numeric.get("env") or {}
    if any(env.get(k) != v for k, v in STANDARD.items()):
        return False
    blas = numeric.get("blas") or []
    torch_info = numeric.get("torch") or {}
    return bool(blas) and all(b.get("architecture") == STANDARD["OPENBLAS_CORETYPE"] for b in blas
                              if b.get("internal_api") == "openblas") \
        and str(torch_info.get("cpu_capability", "")).lower() == STANDARD["ATEN_CPU_CAPABILITY"]
