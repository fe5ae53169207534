"""The web app: its task → question rules, its sessions and error log driven through the Gradio client, and the
app itself driven in headless Chromium with Playwright.

The browser tests need Debian's chromium (`apt-get install chromium`, done by .ci/run). Without it they skip,
unless SKYEYE_REQUIRE_BROWSER=1 (set by .ci/run), where a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from skyeye.boxes import grid_to_pixel
from skyeye.data.synth import render_scene
from skyeye.draw import PALETTE
from skyeye.serve.web.tasks import WEB_TASKS, question_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_region_tasks_turn_pixel_boxes_into_grid_boxes_of_the_image():
    question, task = question_for("Referring expression", "64, 30, 128, 90", width=640, height=300)
    assert (question, task) == ("{<10><10><20><30>}", "identify")
    question, _ = question_for("Region description", "{<1><2><3><4>}", width=640, height=300)
    assert question == "describe this object in {<1><2><3><4>}"


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [("the left one", "four pixel coordinates"), ("10, 20, 30", "four pixel coordinates"),
     ("50, 20, 10, 40", "x1 < x2"), ("0, 0, 700, 10", "inside the 640 x 300 image")],
)  # fmt: skip
def test_bad_regions_say_what_to_type(typed, complaint):
    with pytest.raises(ValueError, match=complaint):
        question_for("Referring expression", typed, width=640, height=300)


def test_empty_questions_take_the_task_default_or_are_refused():
    assert question_for("Caption", "  ", 10, 10) == (WEB_TASKS["Caption"].default, "caption")
    assert question_for("Grounding", "the red roof", 10, 10) == ("the red roof", "grounding")
    with pytest.raises(ValueError, match="type a question"):
        question_for("Visual question answering", "", 10, 10)


def test_scene_classification_turns_typed_class_names_into_the_class_list_question():
    from skyeye.class_lists import listed_classes

    question, task = question_for("Scene classification", "forest, river,  parking lot", 10, 10)
    assert task == "scene" and listed_classes(question) == ["forest", "river", "parking lot"]
    typed = "Is it a forest, a river or a farm?"
    assert question_for("Scene classification", typed, 10, 10) == (typed, "scene"), "a question stays as typed"
    with pytest.raises(ValueError, match="none of them empty"):
        question_for("Scene classification", "forest,,river", 10, 10)


def test_an_overlong_question_is_refused_before_it_reaches_the_model():
    with pytest.raises(ValueError, match="2001 characters long; at most 2000"):
        question_for("Free chat", "x" * 2001, 10, 10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(model, **options):
    """The app on `model`, launched the way `skyeye web` launches it; yields (app, url)."""
    from skyeye.serve.web.app import build_app, launch

    session_options = {k: options.pop(k) for k in ("max_sessions",) if k in options}
    app = build_app(model, [], max_new_tokens=8, **options)
    port = free_port()
    launch(app, "127.0.0.1", port, max_upload_mb=5, prevent_thread_lock=True, quiet=True, **session_options)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        app.close()


def new_session(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def held_chats(app) -> list:
    from skyeye.serve.session import ImageChat

    sessions = app.state_holder.session_data.values()
    return [value for session in sessions for value in session.state_data.values() if isinstance(value, ImageChat)]


@pytest.fixture
def large_scene(tmp_path) -> Path:
    path = tmp_path / "large.png"
    render_scene(seed=5, size=64)[0].resize((2400, 1800)).save(path)  # 13 MB decoded, 150 KB as PNG
    return path


def test_sessions_keep_no_full_image_and_are_capped(small_model, large_scene):
    from gradio_client import handle_file

    from skyeye.serve.web.app import DISPLAY_SIDE
    from test_session import held_pixel_bytes

    with served(small_model, max_sessions=3) as (app, url):
        sessions = [new_session(url) for _ in range(6)]
        for session in sessions:
            session.predict(handle_file(str(large_scene)), api_name="/upload")
        chats = held_chats(app)
        assert 1 <= len(chats) <= 3
        side = small_model.cfg.vision.image_size
        assert all(held_pixel_bytes(chat) <= 3 * (side * side + DISPLAY_SIDE * 768) for chat in chats)
        status = sessions[-1].predict("", "Caption", [], api_name="/ask")[2]
        assert status.startswith("Answer 1:")


def test_a_session_is_forgotten_after_its_time_to_live(small_model, large_scene):
    from gradio_client import handle_file

    with served(small_model, session_ttl_s=1) as (app, url):
        new_session(url).predict(handle_file(str(large_scene)), api_name="/upload")
        assert len(held_chats(app)) == 1
        deadline = time.monotonic() + 30
        while held_chats(app):
            assert time.monotonic() < deadline, "the session outlived its time to live"
            time.sleep(0.5)


def test_user_mistakes_are_one_line_in_the_server_log_not_a_traceback(small_model, large_scene, tmp_path, capfd,
                                                                     caplog):  # fmt: skip
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.png"
    notes.write_text("these are field notes, not pixels")
    with served(small_model) as (_, url):
        session = new_session(url)
        with pytest.raises(AppError, match="Upload an image"):
            session.predict("", "Caption", [], api_name="/ask")
        assert "not an image PIL can read" in session.predict(handle_file(str(notes)), api_name="/upload")[1]
        session.predict(handle_file(str(large_scene)), api_name="/upload")
        mistakes = [("x" * 3000, "Free chat", "at most 2000"), ("the left one", "Referring expression", "four pixel"),
                    ("describe " * 150, "Caption", "more than the context")]  # fmt: skip
        for typed, task, complaint in mistakes:
            with pytest.raises(AppError, match=complaint):
                session.predict(typed, task, [], api_name="/ask")
    logged = [record.getMessage() for record in caplog.records if record.name == "skyeye.serve.web.app"]
    assert len(logged) == 5 and all("\n" not in line for line in logged)
    assert "not an image PIL can read" in logged[1] and "more than the context" in logged[4]
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("SKYEYE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from skyeye.model.loading import default_source, load_model
    from skyeye.serve.web.app import build_app, launch
    from skyeye.serve.web.examples import make_examples

    examples = make_examples(tmp_path_factory.mktemp("examples"))
    app = build_app(load_model(default_source()), examples, max_new_tokens=24)
    port = free_port()
    launch(app, "127.0.0.1", port, max_upload_mb=5, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}"
    app.close()


def _shown_image(page) -> Image.Image:
    source = page.locator("#annotated img").get_attribute("src")
    return Image.open(io.BytesIO(page.request.get(source).body())).convert("RGB")


def sorted_box(box: list[int]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def test_upload_ask_for_a_place_and_see_its_box_drawn(browser, app_url, tmp_path):
    scene = tmp_path / "scene.png"
    render_scene(seed=5, size=256)[0].save(scene)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(app_url)
    page.locator("#upload input[type=file]").set_input_files(str(scene))
    page.locator("#annotated img").wait_for()
    assert "256 × 256" in page.locator("#image-info").inner_text()
    assert _shown_image(page).tobytes() == Image.open(scene).convert("RGB").tobytes()

    page.locator("#task").get_by_label("Grounding", exact=True).check()
    page.locator("#question textarea").fill("the building")
    page.locator("#send").click()
    page.locator("#status", has_text="Answer 1: first token after").wait_for(timeout=60_000)

    answer = page.locator("#conversation .message.bot").last.inner_text()
    grid = re.search(r"\{<(\d+)><(\d+)><(\d+)><(\d+)>\}", answer)
    assert grid, f"no box in the answer {answer!r}"
    listed = len(re.findall(r"box \d+:", answer))
    assert listed >= 1 and f"{listed} box" in page.locator("#status").inner_text()
    x1, y1, x2, y2 = grid_to_pixel(sorted_box([int(v) for v in grid.groups()]), 256, 256)
    shown = _shown_image(page)
    assert shown.getpixel((int(x1), int((y1 + y2) / 2))) == PALETTE[0]  # the box's left edge is drawn
    page.screenshot(path=tmp_path / "web-grounding.png", full_page=True)

    page.locator("#task").get_by_label("Caption", exact=True).check()
    page.locator("#send").click()
    page.locator("#status", has_text="Answer 2: first token after").wait_for(timeout=60_000)
    assert page.locator("#conversation .message.user").count() == 2
    assert "Briefly describe this image." in page.locator("#conversation").inner_text()

    page.locator("#clear").click()
    page.locator("#conversation .message").first.wait_for(state="detached")
    page.close()


def test_a_file_that_is_not_an_image_gets_a_clear_message(browser, app_url, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("these are field notes, not pixels")
    page = browser.new_page()
    page.goto(app_url)
    page.locator("#upload input[type=file]").set_input_files(str(fake))
    page.locator("#image-info", has_text="Cannot use notes.png").wait_for()
    assert "not an image PIL can read" in page.locator("#image-info").inner_text()
    page.locator("#send").click()
    page.locator("text=Upload an image").first.wait_for()
    page.close()


def test_the_generated_geotiff_example_says_how_it_was_rendered(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_text("scene-3-4band-uint16.tif").click()
    page.locator("#image-info", has_text="4-band").wait_for()
    assert "uint16" in page.locator("#image-info").inner_text()
    page.locator("#annotated img").wait_for()
    page.close()
