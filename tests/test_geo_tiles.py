"""The tile grid covers every pixel; boxes merge across overlaps and seams by the documented rule."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyeye.geo.merge import TileBox, merge_boxes
from skyeye.geo.tiles import offsets, tile_grid


@settings(max_examples=60)
@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    size=st.integers(10, 300),
    overlap_share=st.floats(0, 0.75),
)
def test_every_pixel_is_in_a_tile_and_no_tile_leaves_the_scene(width, height, size, overlap_share):
    overlap = int(size * overlap_share)
    tiles = tile_grid(width, height, size, overlap)
    covered = np.zeros((height, width), dtype=bool)
    for tile in tiles:
        assert tile.x >= 0 and tile.x + tile.width <= width and tile.y >= 0 and tile.y + tile.height <= height
        assert (tile.width, tile.height) == (min(size, width), min(size, height))
        covered[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width] = True
    assert covered.all()
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert len({t.id for t in tiles}) == len(tiles)


def test_the_last_tile_is_shifted_inward_not_dropped():
    # 1000 px with 512-px tiles and 64 px overlap: geoai's grid stops at 448 and never sees 960..999.
    assert offsets(1000, 512, 64) == [0, 448, 488]
    assert offsets(960, 512, 64) == [0, 448]
    assert offsets(300, 512, 64) == [0]


def test_resampled_tiles_cover_scale_times_more_scene_pixels():
    tiles = tile_grid(1000, 500, 100, 10, scale=(2.0, 2.0))
    assert {(t.width, t.height, t.out_width, t.out_height) for t in tiles} == {(200, 200, 100, 100)}
    assert sorted({t.x for t in tiles}) == [0, 180, 360, 540, 720, 800]
    small = tile_grid(150, 120, 100, 10, scale=(2.0, 2.0))
    assert [(t.width, t.height, t.out_width, t.out_height) for t in small] == [(150, 120, 75, 60)]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_tile_settings_are_refused(size, overlap):
    with pytest.raises(ValueError, match="--tile-size|--overlap"):
        tile_grid(100, 100, size, overlap)


def _tiles():
    # A 250 x 100 scene in 100-px tiles overlapping by 20: x at 0, 80, 150.
    return {t.col: t for t in tile_grid(250, 100, 100, 20)}


def test_a_box_cut_by_a_seam_is_merged_with_its_other_part():
    tiles = _tiles()
    boxes = [
        TileBox("tank", (90, 40, 100, 60), tiles[0]),  # the part tile 0 sees, cut at its right edge
        TileBox("tank", (90, 40, 130, 60), tiles[1]),  # the whole object
        TileBox("tank", (140, 10, 180, 20), tiles[1]),  # longer than the overlap: both parts are cut
        TileBox("tank", (150, 10, 200, 20), tiles[2]),
    ]
    merged, degenerate = merge_boxes(boxes, 250, 100)
    assert degenerate == 0
    assert [(m.box, m.members) for m in merged] == [((90, 40, 130, 60), (0, 1)), ((140, 10, 200, 20), (2, 3))]
    assert merged[0].kept == 1  # the box farther from its tile's seams


def test_duplicates_keep_the_box_farther_from_its_tiles_edge():
    tiles = _tiles()
    boxes = [
        TileBox("car", (84, 50, 96, 60), tiles[0]),  # 4 px from tile 0's right seam
        TileBox("car", (85, 50, 97, 60), tiles[1]),  # 5 px from tile 1's left seam
    ]
    merged, _ = merge_boxes(boxes, 250, 100)
    assert [(m.kept, m.box) for m in merged] == [(1, (85, 50, 97, 60))]
    assert merge_boxes(boxes[::-1], 250, 100)[0][0].box == (85, 50, 97, 60)  # whatever the order given


def test_separate_objects_other_labels_and_scene_borders_stay_apart():
    tiles = _tiles()
    boxes = [
        TileBox("car", (10, 10, 20, 20), tiles[0]),
        TileBox("car", (30, 10, 40, 20), tiles[0]),  # same tile: never merged with its neighbour
        TileBox("ship", (90, 40, 100, 60), tiles[0]),  # cut, but the other part is a tank
        TileBox("tank", (90, 40, 130, 60), tiles[1]),
        TileBox("tank", (240, 0, 250, 100), tiles[2]),  # at the scene's border, which is no seam
        TileBox("tank", (0, 0, 0, 10), tiles[0]),  # zero width
        TileBox("tank", (5, 7, 9, 7), tiles[0]),  # zero height
    ]
    merged, degenerate = merge_boxes(boxes, 250, 100)
    assert degenerate == 2
    assert [m.members for m in merged] == [(0,), (1,), (2,), (3,), (4,)]
