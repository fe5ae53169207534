"""Mapping scales: memory does not grow with the scene, and two processes write the layer one process writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from geo_helpers import StandInModel, paint, write_raster
from skyeye.geo.mapper import map_scenes

TESTS = Path(__file__).resolve().parent

PEAK_MEMORY = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, rasterio
from rasterio.windows import Window
from geo_helpers import UTM, UTM_TRANSFORM, StandInModel
from skyeye.geo.mapper import map_scenes

side, path = int(sys.argv[2]), sys.argv[3]
# A sparse tiled GeoTIFF: blocks never written take no disk and read as nodata; four blocks hold data.
profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint16", tiled=True, blockxsize=256,
               blockysize=256, sparse_ok=True, nodata=0, crs=UTM, transform=UTM_TRANSFORM)
with rasterio.open(path, "w", **profile) as dataset:
    block = np.full((3, 256, 256), 1000, np.uint16)
    block[:, 100:140, 100:160] = 2500
    middle = side // 512 * 256
    for x, y in [(0, 0), (side - 256, 0), (0, side - 256), (middle, middle)]:
        dataset.write(block, window=Window(x, y, 256, 256))
result = map_scenes(StandInModel(), [path], "detection", "tank", out=path + ".gpkg", stretch="0,3000",
                    progress=False)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"tiles": result.report.tiles, "features": result.report.features, "peak_mb": peak_mb}))
"""


def _peak(tmp_path, side):
    run = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(TESTS), str(side), str(tmp_path / f"{side}.tif")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_scene(tmp_path):
    small, large = _peak(tmp_path, 2048), _peak(tmp_path, 8192)
    assert (small["features"], large["features"]) == (4, 4)
    assert large["tiles"] > 10 * small["tiles"]
    # Reading the large scene whole would take 8192² x 3 bands x 2 bytes = 384 MB more.
    assert large["peak_mb"] < small["peak_mb"] + 40, (small, large)


TWO_PROCESSES = """
import sys
sys.path.insert(0, sys.argv[1])
from accelerate import PartialState
from geo_helpers import StandInModel
from skyeye.geo.mapper import map_scenes

model = StandInModel()
map_scenes(model, sys.argv[3:], "detection", "tank", out=sys.argv[2], tile_size=100, overlap=20,
           stretch="0,3000", batch_size=2, progress=False)
print(f"process {PartialState().process_index} asked {len(model.seen)} tiles")
"""


def _scenes(tmp_path):
    scenes = []
    for number, (width, height) in enumerate([(257, 183), (190, 240)]):
        bands = np.full((3, height, width), 1000, dtype=np.uint16)
        paint(bands, {2000: (10, 10, 30, 25), 2200: (90, 40, 130, 60), 2600: (150, 75, 175, 95)})
        bands[:, height - 110 :, : width // 2 + 10] = 0  # a corner of nodata tiles
        scenes.append(write_raster(tmp_path / f"scene-{number}.tif", bands, nodata=0))
    return scenes


def test_two_processes_write_the_layer_one_process_writes(tmp_path):
    scenes = _scenes(tmp_path)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    model = StandInModel()
    one = map_scenes(model, scenes, "detection", "tank", out=tmp_path / "one" / "tanks.geojson", tile_size=100,
                     overlap=20, stretch="0,3000", batch_size=2, progress=False)  # fmt: skip
    (tmp_path / "two.py").write_text(TWO_PROCESSES)
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29547",
         str(tmp_path / "two.py"), str(TESTS), str(tmp_path / "two" / "tanks.geojson"), *map(str, scenes)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    asked = [int(line.split()[3]) for line in run.stdout.splitlines() if line.startswith("process")]
    assert len(asked) == 2 and min(asked) > 0 and sum(asked) == len(model.seen) == one.report.answered
    assert (tmp_path / "two" / "tanks.geojson").read_bytes() == (tmp_path / "one" / "tanks.geojson").read_bytes()
    assert one.report.features == 6 and one.report.skipped_nodata > 0
