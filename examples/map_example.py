"""The README's map example: `skyeye map` on real scenes, and a picture of the layers it writes.

1. Merges the ten RSVQA-HR orthophotos of ../shared/data (USGS, EPSG:3857, 0.2 m; neighbours in one grid) into
   one 3072 x 1024 GeoTIFF with two nodata gaps, under --work (never in the repository).
2. Runs `skyeye map` with the bundled model on it (a caption per 512-px tile, GeoPackage), and on three
   neighbouring BigEarthNet Sentinel-2 band folders in one run (a scene class per 64-px tile, a fixed stretch,
   GeoJSON), printing each command and its report.
3. Loads both layers with geopandas and draws them over the images the model saw to docs/map-example.png.

    python examples/map_example.py --data-root ../shared/data --work /tmp/skyeye-map
"""

from __future__ import annotations

import argparse
import glob
import io
import subprocess
import sys
import textwrap
from pathlib import Path

PATCHES = "bigearthnet_s2/S2A_MSIL2A_20170613T101031_0_4[5-7]"  # three patches, 1.2 km each, north to south
STRETCH = "0,3000"  # Sentinel-2 L2A reflectance x 10000: one range for every patch, so calm sea stays calm


def merge_rsvqa_hr(data_root: Path, out: Path) -> Path:
    import rasterio
    from rasterio.merge import merge

    tiles = sorted((data_root / "demo_images" / "rsvqa_hr").glob("*.tif"))
    merged, transform = merge([str(t) for t in tiles], nodata=0)
    profile = dict(driver="GTiff", count=3, dtype="uint8", crs="EPSG:3857", transform=transform, nodata=0,
                   width=merged.shape[2], height=merged.shape[1], tiled=True, compress="deflate")  # fmt: skip
    with rasterio.open(out, "w", **profile) as dataset:
        dataset.write(merged)
    return out


def skyeye_map(*argv: str) -> None:
    print("$ skyeye map " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "skyeye.cli", "map", *argv, "--no-progress"], check=True)


def draw(scene: Path, folders: list[Path], captions_layer: Path, classes_layer: Path, out: Path) -> None:
    import geopandas
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from PIL import Image
    from rasterio.plot import plotting_extent
    from rasterio.windows import Window

    from skyeye.geo.bands import choose_bands
    from skyeye.geo.scene import open_scene
    from skyeye.geo.stretch import parse_stretch, scene_stretch

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [3.2, 1]})
    with rasterio.open(scene) as dataset:
        image = dataset.read(out_shape=(3, dataset.height // 4, dataset.width // 4)).transpose(1, 2, 0)
        left.imshow(image, extent=plotting_extent(dataset))
    captions = geopandas.read_file(captions_layer)
    captions.boundary.plot(ax=left, color="yellow", linewidth=1)
    for row in captions.itertuples():
        x1, _, _, y2 = row.geometry.bounds
        left.annotate("\n".join(textwrap.wrap(row.answer, 22)), (x1 + 4, y2 - 4), color="white", fontsize=5.5,
                      va="top", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})  # fmt: skip
    left.set_title("RSVQA-HR orthophotos merged (EPSG:3857, 0.2 m), --task caption:\n512-px tiles, the two gaps "
                   "skipped as nodata", fontsize=8)  # fmt: skip
    for folder in folders:  # each patch as the model saw it: its bands, its one stretch
        with open_scene(folder) as patch:
            bands = choose_bands(patch.bands, None, str(folder))
            values, valid = patch.read(bands.numbers, Window(0, 0, patch.width, patch.height))
            rgb = scene_stretch(patch, bands, parse_stretch(STRETCH)).render(values, valid)
            west, north = patch.georeference.corners((0, 0, 0, 0))[0]
            east, south = patch.georeference.corners((patch.width, patch.height, 0, 0))[0]
        right.imshow(rgb, extent=(west, east, south, north))
    classes = geopandas.read_file(classes_layer).to_crs(patch.georeference.crs)  # lon/lat GeoJSON, drawn in UTM
    classes.boundary.plot(ax=right, color="yellow", linewidth=0.6)
    for row in classes.itertuples():
        centre = row.geometry.centroid
        right.annotate(row.label, (centre.x, centre.y), color="white", fontsize=5.5, ha="center", va="center",
                       bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "linewidth": 0})  # fmt: skip
    right.set_title(f"3 BigEarthNet patches (Sentinel-2,\n10 m, sea), --task scene\n--stretch {STRETCH}", fontsize=8)
    for axis in (left, right):
        axis.set_axis_off()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the README's picture small.
    Image.open(buffer).convert("RGB").quantize(256).save(out, optimize=True)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/skyeye-map"), help="scene and layers go here")
    parser.add_argument("--out", type=Path, default=Path("docs/map-example.png"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    scene = merge_rsvqa_hr(args.data_root, args.work / "rsvqa_hr.tif")
    patches = str(args.data_root / "geotiff" / PATCHES)
    captions_layer, classes_layer = args.work / "rsvqa_hr_captions.gpkg", args.work / "bigearthnet_scenes.geojson"
    skyeye_map(str(scene), "--task", "caption", "--overlap", "0", "--out", str(captions_layer))
    skyeye_map(patches, "--task", "scene", "--tile-size", "64", "--overlap", "8", "--stretch", STRETCH, "--out",
               str(classes_layer))  # fmt: skip
    draw(scene, sorted(Path(p) for p in glob.glob(patches)), captions_layer, classes_layer, args.out)


if __name__ == "__main__":
    main()
