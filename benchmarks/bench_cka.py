"""Linear CKA: ours vs a plain-GEMM feature-space computation vs the n x n Gram method.

For n in {2,000; 10,000; 50,000} x p in {64; 512; 4,096} (float32 inputs with a non-zero
mean), measures the median wall time of each method (alternated in one run, the first
method rotating between repetitions; a call under 50 ms is timed as the mean of a loop of
back-to-back calls, as timeit does), the peak resident memory each adds (sampled from
/proc/self/statm during one extra call, so the sampler thread never slows a timed call),
the error against an independent float64 reference (biased and debiased), and ours vs
the machine's roofline measured in the same run: max(6·n·p² flops / peak float32 GEMM
rate, 8·n·p bytes / copy bandwidth), i.e. the time a plain three-GEMM feature-space
computation needs at best. "ours b+d" is one streamed pass that yields both the biased
and the debiased value.
Usage: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_cka.py [--quick | --sizes 10000x512,50000x4096]
[--threads 1] [--repeats 3]`` (``--threads`` sets torch's threads; SciPy's BLAS reads
``OPENBLAS_NUM_THREADS`` when it loads: set both to the same number).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

if "PYTHONPATH" not in os.environ:  # else PYTHONPATH names the forgetlab to measure
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _memory import PeakMemory  # noqa: E402

import forgetlab  # noqa: E402
from forgetlab.analysis import linear_cka  # noqa: E402
from forgetlab.analysis.cka import LinearCKAAccumulator, _choose_method  # noqa: E402

F64 = torch.float64
GRAM_LIMIT_GIB = 16.0


def plain_gemm(x: torch.Tensor, y: torch.Tensor) -> float:
    """Feature-space CKA with three float32 GEMMs (centred first, float64 norms): the baseline."""
    xc = x - x.mean(0)
    yc = y - y.mean(0)
    xtx, yty, xty = xc.T @ xc, yc.T @ yc, xc.T @ yc
    num = float(xty.square().sum(dtype=F64))
    return num / (float(xtx.square().sum(dtype=F64)) * float(yty.square().sum(dtype=F64))) ** 0.5


def gram_method(x: torch.Tensor, y: torch.Tensor) -> float:
    """The n x n method of public tools: K = XXᵀ, centre K, HSIC, float32 norms."""
    def centred_gram(z):
        k = z @ z.T
        k -= k.mean(0, keepdim=True)
        k -= k.mean(1, keepdim=True)
        return k

    k = centred_gram(x)
    l = centred_gram(y)
    hsic = torch.dot(k.reshape(-1), l.reshape(-1))
    return float(hsic / (torch.linalg.norm(k) * torch.linalg.norm(l)))


def reference(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Independent float64 feature-space reference: biased, and debiased (Kornblith's form)."""
    n = x.shape[0]
    xd = x.to(F64)
    xd -= xd.mean(0)
    yd = y.to(F64)
    yd -= yd.mean(0)
    from scipy.linalg import blas  # float64 dsyrk halves the reference's cost; a full GEMM for XᵀY

    xtx = torch.from_numpy(blas.dsyrk(1.0, xd.numpy().T, trans=0, lower=1))
    yty = torch.from_numpy(blas.dsyrk(1.0, yd.numpy().T, trans=0, lower=1))
    xtx, yty = xtx + xtx.T - torch.diag(xtx.diagonal()), yty + yty.T - torch.diag(yty.diagonal())
    xty = xd.T @ yd
    rx, ry = xd.square().sum(1), yd.square().sum(1)
    del xd, yd

    def debiased_dot(cross_sq, ra, rb):
        return cross_sq - n / (n - 2.0) * float(ra @ rb) + float(ra.sum()) * float(rb.sum()) / ((n - 1) * (n - 2))

    sxx, syy, sxy = (float(m.square().sum()) for m in (xtx, yty, xty))
    biased = sxy / (sxx * syy) ** 0.5
    debiased = debiased_dot(sxy, rx, ry) / (debiased_dot(sxx, rx, rx) * debiased_dot(syy, ry, ry)) ** 0.5
    return biased, debiased


def both(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Ours, one streamed pass giving biased and debiased CKA (what reports show)."""
    acc = LinearCKAAccumulator()
    acc.update(x, y)
    return acc.compute(), acc.compute(debiased=True)


# Calls shorter than this are timed in a loop of back-to-back calls filling about this much
# time (as timeit does): a single sub-millisecond call after another method's large memory
# traffic, or after the machine idled, measures cold caches and the VM's wake-up, not the method.
LOOP_SECONDS = 0.05


def timed(fn, number: int = 1):
    """(value, seconds per call) over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        value = fn()
    return value, (time.perf_counter() - start) / number


def memory_added(fn) -> int:
    """Resident memory one call adds (a separate call: the sampler thread would slow the timed ones)."""
    with PeakMemory() as mem:
        fn()
    return mem.added


def roofline_rates() -> tuple[float, float]:
    """(float32 GEMM flop/s, copy bytes/s), medians of 3 after a warm-up."""
    a = torch.randn(4096, 4096)
    b = torch.randn(4096, 4096)
    a @ b
    times = []
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    flops = 2 * 4096**3 / statistics.median(times)
    src = torch.randn(1 << 26)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    bandwidth = 2 * src.numel() * 4 / statistics.median(times)
    return flops, bandwidth


def make_data(n: int, p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=gen)
    x += 3.0
    y = torch.randn(n, p, generator=gen)
    y *= 0.8
    y += torch.tanh(x[:, torch.randperm(p, generator=gen)] - 3.0)
    y -= 1.5
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small subset: n in {2000, 10000} x p in {64, 512}")
    parser.add_argument("--sizes", help="comma-separated n x p cases instead of the grid, e.g. 1000x64,50000x4096")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ns = (2000, 10000) if args.quick else (2000, 10000, 50000)
    ps = (64, 512) if args.quick else (64, 512, 4096)
    sizes = [(n, p) for n in ns for p in ps]
    if args.sizes:
        sizes = [tuple(int(v) for v in case.split("x")) for case in args.sizes.split(",")]

    print(f"# bench_cka  {datetime.date.today()}  {platform.machine()}  {os.cpu_count()} CPUs  "
          f"torch {torch.__version__}  threads={args.threads}  "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}  repeats={args.repeats}  "
          f"load average at start {os.getloadavg()[0]:.1f}")
    print(f"# forgetlab from {Path(forgetlab.__file__).parent}")
    peak_flops, bandwidth = roofline_rates()
    print(f"# roofline: float32 GEMM {peak_flops / 1e9:.0f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s")
    header = (f"{'n':>6} {'p':>5} {'method':<11} {'form':<7} {'median ms':>10} {'peak MiB':>9} "
              f"{'|err| biased':>13} {'|err| debiased':>15} {'vs plain':>9} {'/roofline':>9}")
    print(header)
    print("-" * len(header))
    summary = {"max_err": 0.0, "roof_ok": 0, "roof_total": 0, "speedups_4096": [], "mem": []}
    for n, p in sizes:
        x, y = make_data(n, p, seed=n + p)
        ref_biased, ref_debiased = reference(x, y)
        gram_gib = 3 * n * n * 4 / 2**30
        methods = {
            "ours": lambda: linear_cka(x, y),
            "ours b+d": lambda: both(x, y),
            "plain GEMM": lambda: plain_gemm(x, y),
        }
        if gram_gib <= GRAM_LIMIT_GIB:
            methods["n x n Gram"] = lambda: gram_method(x, y)
        quick_case = 6 * n * p * p < 2e10
        numbers = {name: 1 for name in methods}
        if quick_case:  # warm-up only where one call is short; a second call sizes the loops
            for name, fn in methods.items():
                fn()
                _, once = timed(fn)
                numbers[name] = max(1, min(200, int(LOOP_SECONDS / max(once, 1e-6))))
        results = {name: {"t": [], "m": 0, "v": None} for name in methods}
        names = list(methods)
        for repeat in range(args.repeats):  # alternate the methods, rotating which goes first
            for name in names[repeat % len(names):] + names[: repeat % len(names)]:
                value, seconds = timed(methods[name], numbers[name])
                results[name]["t"].append(seconds)
                results[name]["v"] = value
        for name, fn in methods.items():
            results[name]["m"] = memory_added(fn)
        roof = max(6 * n * p * p / peak_flops, 8 * n * p / bandwidth)
        plain_t = statistics.median(results["plain GEMM"]["t"])
        for name, r in results.items():
            t = statistics.median(r["t"])
            mem = r["m"] / 2**20
            value = r["v"][0] if isinstance(r["v"], tuple) else r["v"]
            err_b = abs(value - ref_biased)
            err_d = f"{abs(r['v'][1] - ref_debiased):15.1e}" if name == "ours b+d" else f"{'-':>15}"
            form = {"ours": _choose_method(n, p, p), "ours b+d": "feature", "plain GEMM": "feature"}.get(name, "gram")
            print(f"{n:>6} {p:>5} {name:<11} {form:<7} {t * 1e3:10.3f} {mem:9.0f} {err_b:13.1e} {err_d} "
                  f"{plain_t / t:9.2f} {t / roof:9.2f}")
            if name == "ours b+d":
                summary["max_err"] = max(summary["max_err"], err_b, abs(r["v"][1] - ref_debiased))
            if name == "ours":
                summary["max_err"] = max(summary["max_err"], err_b)
                summary["roof_total"] += 1
                summary["roof_ok"] += t <= roof
                summary["mem"].append((n, p, mem, n * n * 8 / 2**20))
                if p == 4096:
                    summary["speedups_4096"].append((n, plain_t / t))
        if gram_gib > GRAM_LIMIT_GIB:
            print(f"{n:>6} {p:>5} {'n x n Gram':<11} {'gram':<7}  skipped: needs {gram_gib:.0f} GiB")
        del x, y
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    print()
    speedups = ", ".join(f"n={n}: {s:.2f}x" for n, s in summary["speedups_4096"]) or "not run"
    worst_mem = max(summary["mem"], key=lambda m: m[2])
    print(f"SUMMARY: max |ours - float64 reference| = {summary['max_err']:.1e} (target <= 1e-6: "
          f"{'met' if summary['max_err'] <= 1e-6 else 'MISSED'}); at or below the roofline in "
          f"{summary['roof_ok']}/{summary['roof_total']} cases; speed-up vs plain GEMM at p=4096: {speedups} "
          f"(target >= 1.3x); ours' largest peak {worst_mem[2]:.0f} MiB at n={worst_mem[0]}, p={worst_mem[1]} "
          f"(an n x n float64 matrix would be {worst_mem[3]:.0f} MiB)")


if __name__ == "__main__":
    main()
