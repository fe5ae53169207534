"""`skyeye web`: a Gradio app to talk about an uploaded image, with every box drawn on it.

Each browser session holds one `ImageChat` (skyeye.session), the object `skyeye chat` uses too, so the web
app has no prompt code of its own. One model serves every session: generation events share one queue slot
(`concurrency_id="model"`), so answers are produced one at a time while uploads and clears stay responsive.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from skyeye.boxes import find_boxes
from skyeye.draw import draw_boxes
from skyeye.images import DEFAULT_MAX_PIXELS, ImageError
from skyeye.prompts import identifier_of
from skyeye.session import ChatTurn, ImageChat
from skyeye.web.tasks import WEB_TASKS, question_for

# Gradio reports usage to its servers unless told otherwise; this app never talks to the outside.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"]
DISPLAY_SIDE = 1024  # the shown image is scaled down to this longest side; boxes are scaled with it
NO_IMAGE = "Upload an image (PNG, JPEG, TIFF incl. 16-bit and multi-band GeoTIFF) or pick an example."


def build_app(model, examples: list[Path], max_new_tokens: int = 128, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The Gradio Blocks app (not launched)."""
    import gradio as gr

    def open_image(path: str | None):
        if not path:
            return None, None, NO_IMAGE, [], ""
        try:
            chat = ImageChat(model, path, max_new_tokens=max_new_tokens, max_pixels=max_pixels)
        except ImageError as err:
            message = f"Cannot use {Path(path).name}: {str(err).replace(path, Path(path).name)}"
            gr.Warning(message)
            return None, None, message, [], ""
        return chat, _display(chat, None), _describe(chat), [], ""

    def answer(typed: str, label: str, chat: ImageChat | None, history: list):
        if chat is None:
            raise gr.Error(NO_IMAGE)
        width, height = chat.image.image.size
        try:
            question, task = question_for(label, typed, width, height)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        history = [*history, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        yield history, gr.skip(), "Generating…", ""
        try:
            for piece in chat.stream(question, task):
                history[-1]["content"] += piece
                yield history, gr.skip(), "Generating…", ""
        except ValueError as err:  # e.g. the conversation no longer fits the model's context
            raise gr.Error(f"{err} (clear the conversation to go on)") from None
        turn = chat.turns[-1]
        history[-1]["content"] = _answer_text(turn)
        yield history, _display(chat, turn), _timing(len(chat.turns), turn), ""

    def clear(chat: ImageChat | None):
        if chat is not None:
            chat.reset()
        return [], None if chat is None else _display(chat, None), ""

    with gr.Blocks(title="SkyEye") as app:
        chat_state = gr.State(None)
        gr.Markdown("## SkyEye: ask about a remote-sensing image")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=UPLOAD_TYPES, type="filepath", elem_id="upload")
                shown = gr.Image(label="Image and boxes", type="pil", format="png", interactive=False,
                                 elem_id="annotated")  # fmt: skip
                about = gr.Markdown(NO_IMAGE, elem_id="image-info")
                gr.Examples([[str(path)] for path in examples], inputs=[upload], label="Generated examples")
            with gr.Column(scale=1):
                conversation = gr.Chatbot(label="Conversation", height=420, elem_id="conversation")
                task = gr.Radio(list(WEB_TASKS), value="Free chat", label="Task", elem_id="task")
                question = gr.Textbox(label="Question", placeholder=WEB_TASKS["Free chat"].hint, elem_id="question")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear_button = gr.Button("Clear conversation", elem_id="clear")
                status = gr.Markdown("", elem_id="status")

        upload.change(open_image, [upload], [chat_state, shown, about, conversation, status])
        task.change(lambda label: gr.update(placeholder=WEB_TASKS[label].hint), [task], [question])
        answering = [
            trigger(
                answer,
                [question, task, chat_state, conversation],
                [conversation, shown, status, question],
                concurrency_limit=1,
                concurrency_id="model",
            )  # fmt: skip
            for trigger in (send.click, question.submit)
        ]
        # Clearing stops an answer being streamed, so that it cannot reappear in the cleared conversation.
        clear_button.click(clear, [chat_state], [conversation, shown, status], cancels=answering)
    return app


def _describe(chat: ImageChat) -> str:
    loaded = chat.image
    width, height = loaded.original_size
    return f"**{width} × {height}**, {loaded.original_mode}: {loaded.rendering}"


def _display(chat: ImageChat, turn: ChatTurn | None):
    """The rendered image, scaled to DISPLAY_SIDE, with the boxes of `turn` (if any) drawn on it."""
    image = chat.image.image
    scale = min(1.0, DISPLAY_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    if turn is None:
        return image
    boxes = [replace(box, pixels=tuple(v * scale for v in box.pixels)) for box in _turn_boxes(chat, turn)]
    return draw_boxes(image, boxes)


def _turn_boxes(chat: ImageChat, turn: ChatTurn) -> list:
    """The answer's boxes, unnamed ones labelled with the question (a grounding phrase); for a question about
    a region, that region labelled with the answer."""
    if turn.boxes:
        asked = _short(turn.user[len(identifier_of(turn.user) or "") :])
        return [replace(box, phrase=box.phrase or asked) for box in turn.boxes]
    width, height = chat.image.image.size
    return [replace(box, phrase=box.phrase or _short(turn.assistant)) for box in find_boxes(turn.user, width, height)]


def _short(text: str, limit: int = 40) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _answer_text(turn: ChatTurn) -> str:
    listed = [f"- {box.summary(number)}" for number, box in enumerate(turn.boxes, 1)]
    return "\n".join([turn.assistant, *listed]) if listed else turn.assistant


def _timing(number: int, turn: ChatTurn) -> str:
    boxes = f"{len(turn.boxes)} box" + ("" if len(turn.boxes) == 1 else "es")
    first, total = turn.timings["first_token_s"], turn.timings["total_s"]
    return f"Answer {number}: first token after {first:.2f} s, complete in {total:.2f} s, {boxes}"


def serve(model, host: str, port: int, examples_folder: Path, max_upload_mb: int, **options) -> None:
    """Builds the app with generated examples and serves it until interrupted."""
    from skyeye.web.examples import make_examples

    app = build_app(model, make_examples(examples_folder), **options)
    app.queue(max_size=64, default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb}mb")
