"""`skyeye serve`: live servers on loopback, talked to with the official `openai` client (and raw HTTP where the
client hides what is checked).

Answers are compared with what the model says to `model.ask` for the same image and conversation, so the API
adds nothing to the prompt. Where a known answer is needed (boxes on a GeoTIFF, a long answer to walk away
from), a stand-in is used: the bundled model made to write a fixed answer by a logits processor, so the answer
still goes through generation token by token.
"""

from __future__ import annotations

import base64
import io
import re
import shlex
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import torch
import uvicorn
from PIL import Image
from pyproj import Transformer

from geo_helpers import UTM, write_raster
from skyeye.boxes import grid_to_pixel
from skyeye.cli import build_parser
from skyeye.images import load_image
from skyeye.prompts import Conversation
from skyeye.serve.api.app import DEFAULT_MODEL_ID, ServeSettings, build_app

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "examples" / "scene.png"
SCENE_URL = "data:image/png;base64," + base64.b64encode(SCENE.read_bytes()).decode()
KEY = "test-key-3f9a"
CAPTION = "[caption] Briefly describe this image."
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def model():
    from skyeye.model.loading import default_source, load_model

    return load_model(default_source(), merge_lora=True)


@contextmanager
def serving(model, **settings):
    """The API of `model` on a free loopback port, in a background thread; yields its base URL."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(model, ServeSettings(**settings)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "scene.png").write_bytes(SCENE.read_bytes())
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    secret.write_bytes(SCENE.read_bytes())
    (folder / "link.png").symlink_to(secret)
    return folder


@pytest.fixture(scope="module")
def server(model, media_folder):
    with serving(model, api_key=KEY, max_upload_mb=1, max_pixels=1_000_000, max_new_tokens=MAX_TOKENS,
                 allowed_local_media_path=media_folder) as url:  # fmt: skip
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def ask_about(url: str, text: str) -> list[dict]:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


def ask(client, url: str, text: str = CAPTION, **options):
    return client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(url, text), **options)


def health(base: str) -> dict:
    return httpx.get(f"{base}/health").json()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_data_url_image_is_answered_as_skyeye_ask_answers_it(client, model, tmp_path, fmt):
    path = tmp_path / f"scene.{fmt.lower()}"
    Image.open(SCENE).convert("RGB").save(path, fmt)
    reply = ask(client, data_url(path.read_bytes()))
    expected = model.ask(load_image(path), CAPTION, max_new_tokens=MAX_TOKENS)
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == ("stop" if expected.timings["new_tokens"] < MAX_TOKENS else "length")
    usage = reply.usage
    assert usage.completion_tokens == expected.timings["new_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    image_tokens = model.cfg.visual_tokens_per_image
    assert usage.prompt_tokens_details.image_tokens == image_tokens
    question_tokens = len(model.tokenizer(CAPTION, add_special_tokens=False)["input_ids"])
    assert usage.prompt_tokens > image_tokens + question_tokens
    assert reply.choices[0].message.skyeye["image"]["width"] == Image.open(SCENE).width


def test_an_answer_cut_by_max_tokens_says_length(client):
    reply = ask(client, SCENE_URL, max_completion_tokens=2)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 2


def test_a_streamed_answer_is_the_whole_answer_in_pieces_then_the_usage(client):
    messages = ask_about(SCENE_URL, CAPTION)
    whole = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages)
    chunks = list(client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == whole.choices[0].message.content
    finishing = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [f.finish_reason for f in finishing] == [whole.choices[0].finish_reason]
    assert finishing[0].delta.skyeye == whole.choices[0].message.skyeye
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_an_answer_ends_before_its_first_stop_string_streamed_or_not(client):
    messages = ask_about(SCENE_URL, CAPTION)
    full = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages).choices[0].message.content
    words = full.split()
    stop = words[len(words) // 2]
    expected = full[: full.find(stop)].strip()
    whole = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages, stop=[stop, "never-written"])
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (expected, "stop")
    streamed = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_a_seed_makes_a_sampled_answer_reproducible(client):
    sampled = [ask(client, SCENE_URL, temperature=1.5, top_p=1, seed=seed).choices[0].message.content
               for seed in (7, 7, 8, 9, 10)]  # fmt: skip
    assert sampled[0] == sampled[1]
    assert len(set(sampled[1:])) > 1  # it does sample: other seeds, other answers


def test_a_two_turn_conversation_is_the_model_s_own_conversation(client, model):
    url = SCENE_URL
    first = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(url, CAPTION))
    said = first.choices[0].message.content
    follow_up = "[vqa] Is there a road?"
    messages = ask_about(url, CAPTION) + [{"role": "assistant", "content": said},
                                          {"role": "user", "content": follow_up}]  # fmt: skip
    second = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages)
    history = Conversation(num_images=1).ask(CAPTION).answer(said)
    expected = model.ask(load_image(SCENE), follow_up, history=history, max_new_tokens=MAX_TOKENS)
    assert second.choices[0].message.content == expected.text
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens


class KnownAnswer:
    """Stands in for SkyEye: the bundled model, made to write `answer` (then its end token, if `end`) to every
    question; `lengths` holds how many tokens each generate call produced."""

    def __init__(self, model, answer: str, end: bool = True):
        self.model = model
        self.forced = model.tokenizer(answer, add_special_tokens=False)["input_ids"]
        self.forced += [model.tokenizer.eos_token_id] if end else []
        self.steps = 0
        self.lengths: list[int] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def ask_many(self, *args, **generation):
        from transformers import LogitsProcessorList

        answers = self.model.ask_many(*args, logits_processor=LogitsProcessorList([self._force]), **generation)
        self.lengths.append(self.steps)
        return answers

    def _force(self, input_ids, scores):
        self.steps = input_ids.shape[1] + 1
        token = self.forced[min(input_ids.shape[1], len(self.forced) - 1)]
        forced = torch.full_like(scores, -torch.inf)
        forced[:, token] = 0
        return forced


def test_a_geotiff_data_url_gets_its_boxes_in_lon_lat(model, tmp_path):
    grid = (10, 20, 30, 40)
    answer = "<p>tank</p> {<10><20><30><40>}"
    width, height = 200, 100
    bands = np.random.default_rng(0).integers(0, 4000, (4, height, width), dtype=np.uint16)
    geotiff = write_raster(tmp_path / "scene.tif", bands)
    plain = write_raster(tmp_path / "plain.tif", bands, crs=None)
    with serving(KnownAnswer(model, answer)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(
            data_url(geotiff.read_bytes(), "image/tiff"), "[detection] tank"))  # fmt: skip
        unreferenced = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(
            data_url(plain.read_bytes(), "image/tiff"), "[detection] tank"))  # fmt: skip
    extension = reply.choices[0].message.skyeye
    [box] = extension["boxes"]
    pixels = grid_to_pixel(grid, width, height)
    assert box["phrase"] == "tank" and box["grid"] == list(grid) and box["pixels"] == pytest.approx(pixels)
    x1, y1, x2, y2 = pixels
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    on_map = [(500_000 + 10 * x, 4_000_000 - 10 * y) for x, y in corners]  # UTM_TRANSFORM: 10 m pixels
    np.testing.assert_allclose(box["map"], on_map)
    to_wgs84 = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    np.testing.assert_allclose(box["lonlat"], [to_wgs84.transform(*p) for p in on_map])
    assert extension["image"]["georeference"]["crs"] == UTM
    assert (extension["image"]["width"], extension["image"]["height"]) == (width, height)
    assert "4-band uint16" in extension["image"]["rendering"]
    [plain_box] = unreferenced.choices[0].message.skyeye["boxes"]
    assert plain_box["pixels"] == pytest.approx(pixels) and "lonlat" not in plain_box


def test_a_geotiff_turned_upright_by_its_orientation_tag_gets_no_map_coordinates(client, tmp_path):
    """PIL turns the TIFF (orientation 6), GDAL's transform does not: the boxes would land in the wrong places on
    the map, so the image is answered without georeferencing, as `skyeye ask` and `skyeye chat` answer it."""
    upright = write_raster(tmp_path / "upright.tif", np.zeros((3, 40, 60), np.uint8), photometric="RGB")
    turned = io.BytesIO()
    with Image.open(upright) as image:
        image.save(turned, "TIFF", tiffinfo={**dict(image.tag_v2), 274: 6})
    for data, georeferenced in ((upright.read_bytes(), True), (turned.getvalue(), False)):
        described = ask(client, data_url(data, "image/tiff"), max_tokens=1).choices[0].message.skyeye["image"]
        assert ("georeference" in described) is georeferenced
    assert (described["width"], described["height"]) == (40, 60)


def raw_post(base: str, body, key: str | None = KEY) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_a_bad_image_is_a_400_with_the_reason(client, server):
    truncated = data_url(SCENE.read_bytes()[:400])
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(truncated, CAPTION))
    assert "messages[0].content[1].image_url" in str(refused.value) and "truncated" in str(refused.value)
    assert refused.value.response.headers["x-should-retry"] == "false"
    gif = data_url(b"GIF89a" + bytes(40))
    response = raw_post(server, {"model": DEFAULT_MODEL_ID, "messages": ask_about(gif, "hi")})
    error = response.json()["error"]
    assert response.status_code == 400 and "not a PNG, JPEG, WebP or TIFF image" in error["message"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_image"


def test_an_oversize_body_or_image_is_a_413(client):
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    big = encoded(Image.fromarray(noise), "PNG")  # about 3 MB, over the 1 MB limit as base64 too
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(data_url(big), CAPTION))
    assert refused.value.status_code == 413 and refused.value.response.headers["x-should-retry"] == "false"
    many_pixels = encoded(Image.new("RGB", (1100, 1000)), "PNG")  # a few kB, over the 1 Mpx limit
    with pytest.raises(openai.APIStatusError, match="over the limit of 1000000 pixels") as refused:
        client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(data_url(many_pixels), CAPTION))
    assert refused.value.status_code == 413


def test_a_wrong_or_missing_key_is_a_401(server):
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(SCENE_URL, CAPTION))
    missing = raw_post(server, {"model": DEFAULT_MODEL_ID, "messages": []}, key=None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert missing.headers["x-should-retry"] == "false"
    assert health(server)["status"] == "ok"  # liveness needs no key


def test_models_lists_the_served_model_and_an_unknown_one_is_a_404(client):
    assert [m.id for m in client.models.list()] == [DEFAULT_MODEL_ID]
    with pytest.raises(openai.NotFoundError, match="'gpt-4o' not found"):
        client.chat.completions.create(model="gpt-4o", messages=ask_about(SCENE_URL, CAPTION))


@pytest.mark.parametrize("url", ["https://example.com/scene.png", "http://127.0.0.1:1/scene.png", "ftp://x/y.png"])
def test_an_image_url_to_fetch_is_a_400(client, url):
    with pytest.raises(openai.BadRequestError, match="never fetches URLs"):
        client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(url, CAPTION))


def test_file_urls_are_read_only_inside_the_allowed_folder(client, media_folder):
    inside = ask(client, (media_folder / "scene.png").as_uri())
    inline = ask(client, SCENE_URL)
    assert inside.choices[0].message.content == inline.choices[0].message.content
    escapes = [f"file://{media_folder}/../{media_folder.name}/../elsewhere0/secret.png", "file:///etc/passwd",
               (media_folder / "link.png").as_uri()]  # fmt: skip
    for url in escapes:
        with pytest.raises(openai.BadRequestError, match="outside the allowed folder"):
            client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=ask_about(url, CAPTION))


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (lambda b: b["messages"].insert(0, {"role": "system", "content": "be brief"}), "messages[0].role"),
        (lambda b: b.update(n=2), "n"),
        (lambda b: b.update(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
        (lambda b: b.update(temperature=3), "temperature"),
        (lambda b: b.update(max_tokens=0), "max_tokens"),
        (lambda b: b.update(max_tokens=100_000), "max_tokens"),
        (lambda b: b.update(task="dance"), "task"),
        (lambda b: b["messages"][0]["content"].pop(), "messages[0].content"),
        (lambda b: b["messages"][0]["content"].append(b["messages"][0]["content"][1]),
         "messages[0].content[2].image_url"),
        (lambda b: b["messages"].append({"role": "assistant", "content": "yes"}), "messages"),
    ],
)  # fmt: skip
def test_what_the_model_cannot_do_is_a_400_naming_the_field(server, change, param):
    body = {"model": DEFAULT_MODEL_ID, "messages": ask_about(SCENE_URL, CAPTION)}
    change(body)
    response = raw_post(server, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.headers["x-should-retry"] == "false"


def test_sixteen_concurrent_clients_get_the_answers_of_one_after_another(client, server):
    rng = np.random.default_rng(0)
    images = [SCENE_URL] + [
        data_url(encoded(Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)), "PNG"))
        for i in range(3)
    ]  # fmt: skip
    questions = [CAPTION, "[vqa] What is in the image?", "[detection] car", "Is there a road?"]
    requests = [ask_about(image, question) for image in images for question in questions]

    def answer(messages) -> str:
        return client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages).choices[0].message.content

    one_after_another = [answer(messages) for messages in requests]
    before = health(server)
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(answer, requests))
    after = health(server)
    assert together == one_after_another
    assert after["requests"] - before["requests"] == 16
    assert after["batches"] - before["batches"] < 16 and after["largest_batch"] > 1
    assert after["in_progress"] == 0


def test_a_full_queue_is_a_429_and_a_client_that_leaves_frees_its_slot_and_stops_its_row(model):
    long_answer = KnownAnswer(model, "road " * 200, end=False)
    with serving(long_answer, max_queue=1, max_new_tokens=400) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        messages = ask_about(SCENE_URL, CAPTION)
        stream = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages, stream=True)
        assert next(iter(stream)).choices[0].delta.role == "assistant"
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages, max_tokens=2)
        assert refused.value.response.headers["x-should-retry"] == "true"
        stream.close()
        wait_until_idle(url)
        with pytest.raises(httpx.ReadTimeout):  # a client that gives up on a whole answer
            httpx.post(f"{url}/v1/chat/completions", json={"model": DEFAULT_MODEL_ID, "messages": messages}, timeout=1)
        wait_until_idle(url)
        reply = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages, max_tokens=2)
        assert reply.usage.completion_tokens == 2
        assert health(url)["requests"] == 3  # each abandoned row ended, and was counted, before the next
    left_streaming, left_waiting, last = long_answer.lengths
    assert left_streaming < 400 and left_waiting < 400 and last == 2  # the abandoned ones stopped early


def wait_until_idle(base: str) -> None:
    deadline = time.monotonic() + 20
    while health(base)["in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health(base)["in_progress"] == 0


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Serving an OpenAI-compatible API")[1].split("\n## ")[0]


def test_the_readme_examples_run_as_written(model, monkeypatch, capsys):
    section = readme_section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)
    [start] = [code for lang, code in blocks if lang == "bash" and code.startswith("skyeye serve --")]
    monkeypatch.delenv("SKYEYE_API_KEY", raising=False)
    args = build_parser().parse_args(shlex.split(start)[1:])
    assert args.host == "127.0.0.1" and args.api_key is None and args.port == 8000
    [curl] = [code for lang, code in blocks if lang == "bash" and code.startswith("curl")]
    [python] = [code for lang, code in blocks if lang == "python"]
    assert len(python.strip().splitlines()) == 5
    with serving(model, max_new_tokens=args.max_new_tokens) as url:
        port = url.rsplit(":", 1)[1]
        done = subprocess.run(["bash", "-c", curl.replace(":8000", f":{port}")], cwd=REPO, capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        assert httpx.Response(200, content=done.stdout).json()["choices"][0]["message"]["content"]
        monkeypatch.chdir(REPO)  # the example reads examples/scene.png
        exec(compile(python.replace(":8000", f":{port}"), "README.md", "exec"), {})
        assert capsys.readouterr().out.strip()
