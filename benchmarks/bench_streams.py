"""Time and peak memory to build split CIFAR-10 from the official files.

Every case runs in a fresh Python process with its own per-user cache folder
(``XDG_CACHE_HOME``), so nothing is shared but the operating system's page cache
(the dataset files are read once before timing, so every case reads them from memory):

- ``cold``: empty cache: MD5 of the 6 batches (186 MB), unpickle, channel statistics,
  write the decoded arrays to the disk cache, cut the stream.
- ``decode``: checksums already verified (``checksums.json``), no decoded arrays: unpickle,
  statistics, write the disk cache, cut the stream.
- ``warm``: decoded arrays in the disk cache: read the ``.npy`` files, cut the stream.
- ``repeat``: a second ``build_stream_for`` in the same process as ``warm`` (in-memory cache).

Time = wall time of ``build_stream_for`` (imports excluded); peak RSS = ``ru_maxrss`` of the
process at the end; "over imports" = peak RSS minus the RSS after importing forgetlab and
torch. Medians over ``--repeats`` runs; prints a Markdown table.

Then JPEG decoding throughput of :func:`forgetlab.data.images.decode_images` on
``--jpegs`` synthetic CelebA-sized (178 x 218) JPEGs resized to 64 x 64 (what a cold
CelebA / ImageNet load spends its time on), with the DCT-scaled draft decode and without.

    python benchmarks/bench_streams.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's forgetlab

CHILD = r"""
import json, resource, sys, time
from forgetlab.api import build_stream_for
from forgetlab.config import RunConfig, StreamConfig
import torch

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

config = RunConfig(stream=StreamConfig(dataset="cifar10", stream="split"))
base = rss_mb()
start = time.perf_counter()
stream = build_stream_for(config, data_dir=sys.argv[1])
first = time.perf_counter() - start
peak = rss_mb()
start = time.perf_counter()
again = build_stream_for(config, data_dir=sys.argv[1])
repeat = time.perf_counter() - start
assert [t.n_train for t in stream.tasks] == [25000, 25000] and stream.head_sizes == (5, 5)
print(json.dumps({"seconds": first, "repeat_seconds": repeat, "peak_mb": peak, "base_mb": base,
                  "peak_repeat_mb": rss_mb()}))
"""


def run_child(data_dir: Path, cache: Path) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("FORGETLAB_DATA", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(data_dir)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jpegs", type=int, default=2000, help="JPEGs for the decode case (0 = skip)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    folder = data_dir / "cifar-10-batches-py"
    if not folder.is_dir():
        sys.exit(f"CIFAR-10 files not found under {folder}")
    for path in folder.iterdir():  # into the page cache, so every case reads files from memory
        path.read_bytes()

    results: dict[str, list[dict]] = {"cold": [], "decode": [], "warm": []}
    for _ in range(args.repeats):
        cache = Path(tempfile.mkdtemp(prefix="bench-streams-"))
        try:
            results["cold"].append(run_child(data_dir, cache))
            shutil.rmtree(cache / "forgetlab" / "decoded")
            results["decode"].append(run_child(data_dir, cache))
            results["warm"].append(run_child(data_dir, cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def median(case: str, key: str) -> float:
        return statistics.median(r[key] for r in results[case])

    rows = [
        ("cold (nothing cached)", median("cold", "seconds"), median("cold", "peak_mb"), median("cold", "base_mb")),
        ("decode (checksums known)", median("decode", "seconds"), median("decode", "peak_mb"), median("decode", "base_mb")),
        ("warm (disk cache)", median("warm", "seconds"), median("warm", "peak_mb"), median("warm", "base_mb")),
        ("repeat (in-process)", median("warm", "repeat_seconds"), median("warm", "peak_repeat_mb"), median("warm", "base_mb")),
    ]
    print(f"split CIFAR-10 (2 tasks x 5 classes, 50,000 + 10,000 images), median of {args.repeats} fresh processes\n")
    print("| case | build time (s) | peak RSS (MiB) | peak over imports (MiB) |")
    print("|---|---:|---:|---:|")
    for name, seconds, peak, base in rows:
        print(f"| {name} | {seconds:.2f} | {peak:.0f} | {peak - base:.0f} |")
    times = {case: [round(r["seconds"], 3) for r in results[case]] for case in results}
    print(f"\nall times (s): {json.dumps(times)}")
    if args.jpegs:
        jpeg_throughput(args.jpegs, args.repeats)


def jpeg_throughput(n_images: int, repeats: int) -> None:
    import time

    import numpy as np
    from PIL import Image

    from forgetlab.data import images

    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-jpeg-"))
    try:
        paths = []
        for index in range(n_images):  # smooth random images, like photos (noise would be a worst case)
            small = Image.fromarray(rng.integers(0, 256, (28, 23, 3), dtype=np.uint8))
            path = folder / f"{index:06d}.jpg"
            small.resize((178, 218), Image.Resampling.BICUBIC).save(path, quality=90)
            paths.append(path)
        original = images._decode_one
        rows = []
        for name, draft in (("draft (default)", True), ("full decode", False)):
            def decode_one(source, size, _draft=draft):
                if _draft:
                    return original(source, size)
                with images._open(source) as image:
                    rgb = image.convert("RGB")
                    side = min(rgb.size)
                    left, top = (rgb.size[0] - side) // 2, (rgb.size[1] - side) // 2
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
                    return np.asarray(rgb).transpose(2, 0, 1)

            images._decode_one = decode_one
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                out = images.decode_images(paths, 64)
                seconds.append(time.perf_counter() - start)
            assert out.shape == (n_images, 3, 64, 64)
            rows.append((name, statistics.median(seconds)))
        images._decode_one = original
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nJPEG decode 178x218 -> 64x64, {n_images} images, {os.cpu_count()} threads max, median of {repeats}\n")
    print("| decoder | images/s | CelebA train+test (182,637 images) |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        rate = n_images / seconds
        print(f"| {name} | {rate:,.0f} | ~{182637 / rate / 60:.1f} min |")


if __name__ == "__main__":
    main()
