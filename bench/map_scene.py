"""Benchmark: `skyeye map` tiles/s in batches against one tile at a time, and peak memory against scene size.

Throughput: maps one scene with the bundled model (or --model) with --batch-size and with batches of one,
interleaved and repeated (--repeats), and prints tiles/s of each run and the median ratio. The scene is the ten
RSVQA-HR orthophotos of ../shared/data merged into one 3072 x 1024 GeoTIFF with two nodata gaps when they are
there (--data-root), else a generated 3072 x 1024 scene.

Memory: maps sparse 3-band uint16 GeoTIFFs of two sizes (--sides, 16x the pixels by default; blocks never written
read as nodata, four blocks hold data) in fresh processes, interleaved and repeated, and prints each process's
peak RSS, its growth while mapping (after the model is loaded), and the ratio large / small.

    python bench/map_scene.py --repeats 3 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rsvqa_scene(data_root: Path, out: Path) -> Path | None:
    tiles = sorted((data_root / "demo_images" / "rsvqa_hr").glob("*.tif"))
    if not tiles:
        return None
    import rasterio
    from rasterio.merge import merge

    merged, transform = merge([str(t) for t in tiles], nodata=0)
    profile = dict(driver="GTiff", count=3, dtype="uint8", crs="EPSG:3857", transform=transform, nodata=0,
                   width=merged.shape[2], height=merged.shape[1], tiled=True)  # fmt: skip
    with rasterio.open(out, "w", **profile) as dataset:
        dataset.write(merged)
    return out


def generated_scene(out: Path) -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from skyeye.data.synth import draw_scene

    rows = [np.concatenate([draw_scene(4 * r + c, 256).image for c in range(12)], axis=1) for r in range(4)]
    image = np.concatenate(rows, axis=0).transpose(2, 0, 1)
    profile = dict(driver="GTiff", count=3, dtype="uint8", crs="EPSG:32633", width=image.shape[2],
                   height=image.shape[1], transform=from_origin(500_000, 4e6, 0.3, 0.3))  # fmt: skip
    with rasterio.open(out, "w", **profile) as dataset:
        dataset.write(image)
    return out


def throughput(args, scratch: Path) -> None:
    from skyeye.geo.mapper import map_scenes
    from skyeye.model.loading import default_source, load_model

    scene = rsvqa_scene(args.data_root, scratch / "rsvqa_hr.tif") or generated_scene(scratch / "generated.tif")
    model = load_model(args.model or default_source())
    options = dict(tile_size=args.tile_size, overlap=args.overlap, progress=False, max_new_tokens=args.max_new_tokens)

    def tiles_per_s(batch_size: int) -> float:
        started = time.perf_counter()
        result = map_scenes(model, [scene], "caption", batch_size=batch_size, **options)
        return result.report.answered / (time.perf_counter() - started)

    tiles_per_s(args.batch_size)  # warm-up
    runs: dict[int, list[float]] = {1: [], args.batch_size: []}
    for _ in range(args.repeats):
        for batch_size in (1, args.batch_size):
            runs[batch_size].append(tiles_per_s(batch_size))
    print(f"scene {scene.name}, tiles of {args.tile_size} px overlapping {args.overlap}, caption, "
          f"up to {args.max_new_tokens} new tokens, model {args.model or default_source()}")  # fmt: skip
    for batch_size, rates in runs.items():
        print(f"batches of {batch_size:<3}  " + "  ".join(f"{r:6.2f}" for r in rates) + "  tiles/s")
    ratios = [b / o for o, b in zip(runs[1], runs[args.batch_size], strict=True)]
    print(f"batched / one at a time: median {statistics.median(ratios):.2f}x")


CHILD = """
import json, resource, sys
import numpy as np, rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window
from skyeye.geo.mapper import map_scenes
from skyeye.model.loading import default_source, load_model

side, path, model_source = int(sys.argv[1]), sys.argv[2], sys.argv[3]
profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint16", tiled=True, blockxsize=256,
               blockysize=256, sparse_ok=True, nodata=0, crs="EPSG:32633", transform=from_origin(5e5, 4e6, 1, 1))
with rasterio.open(path, "w", **profile) as dataset:
    block = np.random.default_rng(0).integers(500, 3000, (3, 256, 256), dtype=np.uint16)
    middle = side // 512 * 256
    for x, y in [(0, 0), (side - 256, 0), (0, side - 256), (middle, middle)]:
        dataset.write(block, window=Window(x, y, 256, 256))
model = load_model(model_source or default_source())
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result = map_scenes(model, [path], "caption", out=path + ".gpkg", progress=False, max_new_tokens=8)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"tiles": result.report.tiles, "answered": result.report.answered, "loaded_mb": loaded,
                  "peak_mb": peak}))
"""


def memory(args, scratch: Path) -> None:
    small, large = args.sides
    peaks: dict[int, list[dict]] = {small: [], large: []}
    for _ in range(args.repeats):
        for side in (small, large):
            run = subprocess.run([sys.executable, "-c", CHILD, str(side), str(scratch / f"sparse-{side}.tif"),
                                  args.model or ""], capture_output=True, text=True, check=True)  # fmt: skip
            peaks[side].append(json.loads(run.stdout.strip().splitlines()[-1]))
    for side, rows in peaks.items():
        runs = "  ".join(f"{r['peak_mb']:6.0f} (+{r['peak_mb'] - r['loaded_mb']:4.0f})" for r in rows)
        print(f"{side:>6} x {side:<6} {rows[0]['tiles']:5} tiles ({rows[0]['answered']} with data): peak RSS MB "
              f"(growth while mapping) {runs}")  # fmt: skip
    median = {side: statistics.median(r["peak_mb"] for r in rows) for side, rows in peaks.items()}
    ratio = median[large] / median[small]
    print(f"peak RSS {large}² / {small}² ({(large / small) ** 2:.0f}x the pixels): {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", type=int, nargs=2, default=[4096, 16384], help="two scene sides for memory")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        throughput(args, Path(scratch))
        if not args.skip_memory:
            memory(args, Path(scratch))


if __name__ == "__main__":
    main()
