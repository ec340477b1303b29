"""Machine description, matrix-multiply peak, product rates and peak memory."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch


def machine_info() -> dict:
    """Cores, CPU, BLAS libraries and thread counts, library versions, load."""
    import scipy
    import sklearn

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_blas": _torch_blas(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import skorch

        info["skorch"] = skorch.__version__
    except ImportError:  # pragma: no cover - skorch is a dependency
        pass
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: d.get(k) for k in ("internal_api", "prefix", "num_threads", "version")}
            for d in threadpool_info()
        ]
    except ImportError:  # pragma: no cover - threadpoolctl ships with sklearn
        pass
    info["load_average_start"] = _loadavg()
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - Windows
        return None


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.*)", text)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _torch_blas() -> str:
    config = torch.__config__.show()
    match = re.search(r"BLAS_INFO=(\w+)", config)
    blas = match.group(1) if match else "unknown"
    if "Math Kernel Library" in config:
        version = re.search(r"Math Kernel Library Version ([\w.]+)", config)
        blas += f" {version.group(1)}" if version else ""
    return blas


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(
    func, repeat: int = 3, device: str = "cpu", min_total: float = 0.2
) -> float:
    """Minimum wall time of ``func()`` after one warm-up: at least ``repeat``
    calls, more for fast calls (up to ``min_total`` seconds or 200 calls), so a
    short call is not judged on the few runs a busy machine happened to stall."""
    func()
    sync(device)
    best = float("inf")
    spent, calls = 0.0, 0
    while calls < repeat or (spent < min_total and calls < 200):
        start = time.perf_counter()
        func()
        sync(device)
        dt = time.perf_counter() - start
        best = min(best, dt)
        spent += dt
        calls += 1
    return best


def matmul_peak(size: int = 4096, device: str = "cpu") -> dict:
    """GFLOP/s of a square matrix product (best of 3), per library and dtype."""
    out = {}
    flops = 2.0 * size**3
    for name in ("float32", "float64"):
        dt = getattr(torch, name)
        a = torch.rand(size, size, dtype=dt, device=device)
        b = torch.rand(size, size, dtype=dt, device=device)
        t = best_time(lambda a=a, b=b: a @ b, repeat=3, device=device, min_total=0)
        out[f"torch-{name}" + ("" if device == "cpu" else f"-{device}")] = (
            flops / t / 1e9
        )
    if device == "cpu":
        rng = np.random.default_rng(0)
        for name in ("float32", "float64"):
            a = rng.random((size, size)).astype(name)
            t = best_time(lambda a=a: a @ a, repeat=3, min_total=0)
            out[f"numpy-{name}"] = flops / t / 1e9
    return out


def _vmhwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _vmhwm_bytes() is not None


class PeakRSS:
    """Peak resident memory of this process over a ``with`` block.

    Uses the kernel's own high-water mark where it can be reset, else samples
    RSS with psutil every millisecond (which can miss a very short peak).
    """

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.baseline = self._proc.memory_info().rss
        self.method = "VmHWM" if _reset_hwm() else "psutil-sampling"
        self._peak = self.baseline
        self._stop = threading.Event()
        if self.method != "VmHWM":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.method == "VmHWM":
            self._peak = _vmhwm_bytes()
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_extra = max(0, self._peak - self.baseline)
        return False


def memory_child(spec: dict) -> dict:
    """Run one fit under memory measurement (called in a fresh subprocess)."""
    from benchmarks.data import matrix_nbytes
    from benchmarks.methods import load_matrix, make_method

    method = make_method(spec["method"])
    X = method.prepare(load_matrix(spec["path"]))
    out = {"X_bytes": matrix_nbytes(X)}
    # Warm up on a corner of X: imports, lazy library initialisation and
    # thread pools would otherwise count as the fit's memory.
    corner = X[: min(X.shape[0], 4 * spec["n_components"] + 8)]
    method.fit(corner, spec["n_components"], 1)
    del corner
    if method.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    tracemalloc.start()
    with PeakRSS() as rss:
        W, H = method.fit(X, spec["n_components"], spec["n_iter"])
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out.update(
        rss_peak_extra=rss.peak_extra,
        rss_method=rss.method,
        tracemalloc_peak=traced_peak,
        factors_bytes=int(W.nbytes + H.nbytes),
    )
    if method.device.startswith("cuda"):
        out["cuda_peak"] = int(torch.cuda.max_memory_allocated())
    return out


def measure_memory(
    method_name: str,
    matrix_path: str,
    n_components: int,
    n_iter: int,
    live: bool = False,
):
    """Peak memory of one fit, measured in a fresh interpreter so nothing that
    earlier runs left in the allocator hides or inflates it.

    With ``live``, glibc's malloc runs with a fixed mmap threshold
    (``MALLOC_MMAP_THRESHOLD_=65536``): every block of 64 KiB or more is then
    mapped on allocation and unmapped on free, so the resident peak is the
    peak of the memory actually in use. By default glibc raises that threshold
    after the first large free and serves later large blocks from its heaps,
    which it keeps: the default peak also counts memory freed but held by the
    allocator (its size depends on the order of allocations and threads).
    """
    spec = {
        "method": method_name,
        "path": matrix_path,
        "n_components": n_components,
        "n_iter": n_iter,
    }
    root = Path(__file__).resolve().parent.parent
    code = (
        "import json, sys; from benchmarks.measure import memory_child; "
        "print('@@' + json.dumps(memory_child(json.loads(sys.argv[1]))))"
    )
    env = dict(os.environ)
    if live:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(root),
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
