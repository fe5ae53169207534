"""`skyeye web`: a Gradio app to talk about an uploaded image, with every box drawn on it.

Each browser session holds one `ImageChat` (skyeye.serve.session), the object `skyeye chat` uses too, so the web
app has no prompt code of its own. One model serves every session: generation events share one queue slot
(`concurrency_id="model"`), so answers are produced one at a time while uploads and clears stay responsive.

Memory stays bounded however many people use it: a session keeps no full-resolution image, only the model's
input square and a copy at most DISPLAY_SIDE pixels a side (see `skyeye.serve.session`); a session is forgotten
`session_ttl_s` after its last upload, answer or clear; and at most `max_sessions` sessions are kept, the
least recently used going first; their conversation caches (skyeye.model.answer) share
CONVERSATION_CACHE_BYTES. A user's mistake (an unreadable upload, a question too long or without an
image) is shown to them and logged as one line, never as a traceback.

On a georeferenced raster (a GeoTIFF with a CRS) every box is listed on the map and in WGS84 lon/lat too, and
the boxes of every answer so far are offered as GeoJSON (RFC 7946, lon/lat) to download. That file is written
to a temporary folder, which Gradio copies into its cache at once; copies older than GEOJSON_KEEP_S are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from skyeye.draw import draw_boxes
from skyeye.geo.layer import write_box_layer
from skyeye.images import DEFAULT_MAX_PIXELS, ImageError
from skyeye.model.answer import RecentCaches
from skyeye.model.card import ModelCard
from skyeye.prompts import identifier_of
from skyeye.serve.session import ChatTurn, ImageChat
from skyeye.serve.web.tasks import MAX_QUESTION_CHARS, WEB_TASKS, question_for

# Gradio reports usage to its servers unless told otherwise; this app never talks to the outside.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"]
DISPLAY_SIDE = 1024  # the shown image is scaled down to this longest side; boxes are scaled with it
SESSION_TTL_S = 3600  # a conversation is forgotten an hour after its last upload, answer or clear
MAX_SESSIONS = 100  # each holds at most ~3.7 MB of pixels (a 1024 px display copy and the model's square)
# The image features and keys / values that let follow-ups skip the earlier turns (skyeye.model.answer), for all
# sessions together: about 0.5 MB a token for the 7B model in bfloat16; the least recently answered go first.
CONVERSATION_CACHE_BYTES = 2 * 1024**3
GEOJSON_KEEP_S = 600  # far longer than Gradio takes to copy a returned file into its cache
NO_IMAGE = "Upload an image (PNG, JPEG, TIFF incl. 16-bit and multi-band GeoTIFF) or pick an example."

log = logging.getLogger(__name__)


def build_app(model, examples: list[Path], max_new_tokens: int = 128, max_pixels: int = DEFAULT_MAX_PIXELS,
              session_ttl_s: float = SESSION_TTL_S, card: ModelCard | None = None):  # fmt: skip
    """The Gradio Blocks app (not launched; `launch` it to apply the session cap); `card`, the model's card, is
    summed up under the title so that users see its limits before they ask."""
    import gradio as gr

    # Removed with the app's process; each answer's GeoJSON goes to a folder of its own in here.
    geojson_folder = tempfile.TemporaryDirectory(prefix="skyeye-web-")
    conversation_caches = RecentCaches(CONVERSATION_CACHE_BYTES)

    def offered_geojson(chat: ImageChat | None):
        """The download of every box so far as GeoJSON; hidden for an image without a CRS or without boxes."""
        path = None if chat is None else _write_geojson(chat, Path(geojson_folder.name))
        return gr.DownloadButton(value=path, visible=path is not None)

    def refuse(message: str) -> gr.Error:
        """The error to raise for a user's mistake: shown to them, one line in the server log."""
        return gr.Error(_logged(message), print_exception=False)

    def open_image(path: str | None):
        if not path:
            return None, None, NO_IMAGE, [], "", offered_geojson(None)
        try:
            chat = ImageChat(model, path, max_new_tokens=max_new_tokens, max_pixels=max_pixels,
                             display_side=DISPLAY_SIDE, recent=conversation_caches)  # fmt: skip
        except ImageError as err:
            message = _logged(f"Cannot use {Path(path).name}: {str(err).replace(path, Path(path).name)}")
            gr.Warning(message)
            return None, None, message, [], "", offered_geojson(None)
        return chat, _display(chat, None), _describe(chat), [], "", offered_geojson(None)

    def answer(typed: str, label: str, chat: ImageChat | None, history: list):
        if chat is None:
            raise refuse(NO_IMAGE)
        try:
            question, task = question_for(label, typed, *chat.size)
        except ValueError as err:
            raise refuse(str(err)) from None
        history = [*history, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        yield history, gr.skip(), "Generating…", "", gr.skip(), gr.skip()
        try:
            for piece in chat.stream(question, task):
                history[-1]["content"] += piece
                yield history, gr.skip(), "Generating…", "", gr.skip(), gr.skip()
        except ValueError as err:  # e.g. the conversation no longer fits the model's context
            raise refuse(f"{err} (clear the conversation to go on)") from None
        turn = chat.turns[-1]
        history[-1]["content"] = _answer_text(chat, turn)
        # Setting the state again restarts its time to live: a conversation in use is not forgotten.
        yield history, _display(chat, turn), _timing(len(chat.turns), turn), "", chat, offered_geojson(chat)

    def clear(chat: ImageChat | None):
        if chat is not None:
            chat.reset()
        return [], None if chat is None else _display(chat, None), "", chat, offered_geojson(None)

    with gr.Blocks(title="SkyEye", delete_cache=(600, session_ttl_s)) as app:
        chat_state = gr.State(None, time_to_live=session_ttl_s)
        gr.Markdown("## SkyEye: ask about a remote-sensing image")
        if card is not None:
            gr.Markdown(_card_note(card), elem_id="model-card")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=UPLOAD_TYPES, type="filepath", elem_id="upload")
                shown = gr.Image(label="Image and boxes", type="pil", format="png", interactive=False,
                                 elem_id="annotated")  # fmt: skip
                about = gr.Markdown(NO_IMAGE, elem_id="image-info")
                geojson = gr.DownloadButton("Boxes as GeoJSON (WGS84 lon/lat)", visible=False, elem_id="geojson")
                gr.Examples([[str(path)] for path in examples], inputs=[upload], label="Generated examples")
            with gr.Column(scale=1):
                conversation = gr.Chatbot(label="Conversation", height=420, elem_id="conversation")
                task = gr.Radio(list(WEB_TASKS), value="Free chat", label="Task", elem_id="task")
                question = gr.Textbox(label="Question", placeholder=WEB_TASKS["Free chat"].hint, elem_id="question",
                                      max_length=MAX_QUESTION_CHARS)  # fmt: skip
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear_button = gr.Button("Clear conversation", elem_id="clear")
                status = gr.Markdown("", elem_id="status")

        upload.change(open_image, [upload], [chat_state, shown, about, conversation, status, geojson],
                      api_name="upload")  # fmt: skip
        task.change(lambda label: gr.update(placeholder=WEB_TASKS[label].hint), [task], [question])
        answering = [
            trigger(
                answer,
                [question, task, chat_state, conversation],
                [conversation, shown, status, question, chat_state, geojson],
                concurrency_limit=1,
                concurrency_id="model",
                api_name=name,
            )  # fmt: skip
            for trigger, name in ((send.click, "ask"), (question.submit, None))
        ]
        # Clearing stops an answer being streamed, so that it cannot reappear in the cleared conversation.
        clear_button.click(clear, [chat_state], [conversation, shown, status, chat_state, geojson],
                           cancels=answering, api_name="clear")  # fmt: skip
    return app


def launch(app, host: str, port: int, max_upload_mb: int, max_sessions: int = MAX_SESSIONS, **options) -> None:
    """Queues and launches `app`, keeping at most `max_sessions` sessions (the least recently used go first)."""
    app.queue(max_size=64, default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb}mb",
               state_session_capacity=max_sessions, **options)  # fmt: skip


def _logged(mistake: str) -> str:
    """A user's mistake, logged as one line (as shown to them, with the upload's name, not its temporary path)."""
    mistake = " ".join(mistake.split())
    log.warning("web: %s", mistake)
    return mistake


def _card_note(card: ModelCard) -> str:
    """Two lines: what the model is, then its known limits."""
    limits = "  \n**Known limits:** " + " · ".join(card.limitations) if card.limitations else ""
    return f"_{card.summary}_{limits}"


def _describe(chat: ImageChat) -> str:
    loaded = chat.image
    width, height = loaded.original_size
    about = f"**{width} × {height}**, {loaded.original_mode}: {loaded.rendering}"
    if chat.georeference is None:
        return about
    return f"{about}\n\nGeoreferenced ({chat.georeference.how}): boxes listed in lon/lat too, offered as GeoJSON."


def _display(chat: ImageChat, turn: ChatTurn | None):
    """The rendered image, scaled to DISPLAY_SIDE, with the boxes of `turn` (if any) drawn on it."""
    if turn is None:
        return chat.display
    scale_x, scale_y = chat.display.width / chat.size[0], chat.display.height / chat.size[1]
    boxes = [replace(box, pixels=(x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y))
             for box in _turn_boxes(chat, turn) for x1, y1, x2, y2 in [box.pixels]]  # fmt: skip
    return draw_boxes(chat.display, boxes)


def _turn_boxes(chat: ImageChat, turn: ChatTurn) -> list:
    """The answer's boxes, unnamed ones labelled with the question (a grounding phrase); for a question about
    a region, that region labelled with the answer."""
    if turn.boxes:
        asked = _short(turn.user[len(identifier_of(turn.user) or "") :])
        return [replace(box, phrase=box.phrase or asked) for box in turn.boxes]
    region = chat.conversation_image.find_boxes(turn.user)
    return [replace(box, phrase=box.phrase or _short(turn.assistant)) for box in region]


def _short(text: str, limit: int = 40) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _answer_text(chat: ImageChat, turn: ChatTurn) -> str:
    listed = []
    for number, box in enumerate(turn.boxes, 1):
        listed.append(f"- {box.summary(number)}")
        listed += [f"  - {line}" for line in chat.georeference.box_lines(box.pixels)] if chat.georeference else []
    return "\n".join([turn.assistant, *listed]) if listed else turn.assistant


def _write_geojson(chat: ImageChat, folder: Path) -> str | None:
    """The boxes of every answer so far, as drawn, written as RFC 7946 GeoJSON in a new folder under `folder`;
    None for an image without a CRS or a conversation without boxes. Older folders there are removed."""
    if chat.georeference is None:
        return None
    boxes = [(box.pixels, {"label": box.phrase, "turn": number, "question": turn.user, "answer": turn.assistant,
                           "pixel_box": " ".join(f"{v:.2f}" for v in box.pixels)})
             for number, turn in enumerate(chat.turns, 1) for box in _turn_boxes(chat, turn)]  # fmt: skip
    if not boxes:
        return None
    for old in folder.iterdir():
        if time.time() - old.stat().st_mtime > GEOJSON_KEEP_S:
            shutil.rmtree(old, ignore_errors=True)
    name = f"{chat.image_path.stem if chat.image_path else 'image'}-boxes.geojson"
    return str(write_box_layer(chat.georeference, boxes, Path(tempfile.mkdtemp(dir=folder)) / name))


def _timing(number: int, turn: ChatTurn) -> str:
    boxes = f"{len(turn.boxes)} box" + ("" if len(turn.boxes) == 1 else "es")
    first, total = turn.timings["first_token_s"], turn.timings["total_s"]
    return f"Answer {number}: first token after {first:.2f} s, complete in {total:.2f} s, {boxes}"


def serve(model, host: str, port: int, examples_folder: Path, max_upload_mb: int, max_sessions: int = MAX_SESSIONS,
          **options) -> None:  # fmt: skip
    """Builds the app with generated examples and serves it until interrupted."""
    from skyeye.serve.web.examples import make_examples

    launch(build_app(model, make_examples(examples_folder), **options), host, port, max_upload_mb, max_sessions)
