"""An OpenAI chat-completions request -> the model's own conversation, its image and how to decode.

The messages become a `skyeye.prompts.Conversation`, the one the model's prompt code renders for `skyeye ask`,
`skyeye chat` and training: user and assistant messages alternate from a first user message to a last one;
the earlier pairs are answered turns (the history), the last user message is the question. Task identifiers
written in the text (`[refer] the white plane`) work as in `skyeye ask`, and the extension field `task`
(`extra_body={"task": "grounding"}` with the openai client) prefixes one as `skyeye ask --task` does.

SkyEyeGPT answers about one image placed in the first turn, so a conversation has exactly one `image_url`
part, in its first user message; text parts of a message are joined with spaces. What the model cannot do is
refused with a 400 naming the field (system prompts, tools, several choices, log probabilities, penalties),
never silently ignored; fields that do not change the answer (`user`, `metadata`, `store`, ...) are ignored.

Decoding: `temperature` absent or 0 is greedy, as `skyeye ask`; above 0 samples with it and `top_p`. `seed`
makes a sampled answer reproducible. `stop` (up to 4 strings) ends the answer before the first one found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skyeye.prompts import TASKS, Conversation, PromptError

MAX_STOP_STRINGS = 4

# Fields that would change the answer in ways this server cannot honour, with the value that is harmless.
_REFUSED = {
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none"),
    "function_call": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "prediction": (None,),
}


class RequestError(ValueError):
    """A request the API refuses (HTTP 400); `param` names the field, as OpenAI's errors do."""

    def __init__(self, param: str | None, message: str):
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param


@dataclass(frozen=True)
class Decoding:
    max_tokens: int | None  # None: the server's default
    temperature: float | None = None  # None or 0: greedy
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class ChatRequest:
    model: str
    history: Conversation  # the answered turns before the question
    question: str
    task: str | None
    image_url: str
    image_field: str  # where the image part is, for messages about it
    decoding: Decoding
    stream: bool = False
    include_usage: bool = False


def parse_chat_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError(None, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model", "give the model's name (GET /v1/models lists it)")
    _refuse_unsupported(body)
    history, question, image_url, image_field = _conversation(body.get("messages"))
    task = body.get("task")
    if task is not None and task not in TASKS:
        raise RequestError("task", f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    stream = _optional(body, "stream", bool) or False
    options = _optional(body, "stream_options", dict)
    if options is not None and not stream:
        raise RequestError("stream_options", "only allowed with stream=true")
    include_usage = _optional(options or {}, "include_usage", bool, "stream_options.include_usage") or False
    return ChatRequest(model, history, question, task, image_url, image_field, _decoding(body), stream, include_usage)


def _refuse_unsupported(body: dict) -> None:
    for name, harmless in _REFUSED.items():
        if name in body and body[name] not in harmless:
            raise RequestError(name, "not supported by this server (SkyEyeGPT answers with text and boxes only)")
    if body.get("n") not in (None, 1):
        raise RequestError("n", "only n=1 is supported: one answer per request")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise RequestError("response_format", 'only {"type": "text"} is supported')


def _decoding(body: dict) -> Decoding:
    limits = {name: _optional(body, name, int) for name in ("max_completion_tokens", "max_tokens")}
    for name, value in limits.items():
        if value is not None and value < 1:
            raise RequestError(name, f"must be at least 1, got {value}")
    # max_tokens is the older name; a client sending both means the newer one.
    max_tokens = limits["max_completion_tokens"] or limits["max_tokens"]
    temperature = _optional(body, "temperature", float)
    if temperature is not None and not 0 <= temperature <= 2:
        raise RequestError("temperature", f"must be between 0 and 2, got {temperature}")
    top_p = _optional(body, "top_p", float)
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestError("top_p", f"must be above 0 and at most 1, got {top_p}")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("stop", "must be a non-empty string or a list of them")
    if len(stops) > MAX_STOP_STRINGS:
        raise RequestError("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    return Decoding(max_tokens, temperature, top_p, _optional(body, "seed", int), tuple(stops))


def _optional(body: dict, name: str, kind: type, label: str | None = None):
    value = body.get(name)
    if value is None:
        return None
    # JSON has one number type: an integer is a fine float, but true is not a number.
    accepted = (int, float) if kind is float else kind
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, accepted):
        raise RequestError(label or name, f"must be {_KIND_NAMES[kind]}, got {value!r}")
    return float(value) if kind is float else value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", dict: "an object", str: "a string"}


def _conversation(messages: Any) -> tuple[Conversation, str, str, str]:
    """The answered turns, the question, the image URL and the field that holds it."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "give a non-empty list of messages")
    history = Conversation(num_images=1)
    images: list[tuple[str, str]] = []
    question = ""
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError(field, "a message must be an object with a role and a content")
        role = message.get("role")
        expected = "user" if index % 2 == 0 else "assistant"
        if role in ("system", "developer"):
            raise RequestError(f"{field}.role", f"{role} messages are not supported: SkyEyeGPT has no system "
                               "prompt; put instructions in the user message")  # fmt: skip
        if role != expected:
            raise RequestError(f"{field}.role", f"expected {expected!r}, got {role!r}: user and assistant messages "
                               "alternate, from a first user message to a last one")  # fmt: skip
        if message.get("tool_calls") or message.get("function_call"):
            raise RequestError(f"{field}.tool_calls", "tool calls are not supported")
        text, message_images = _content(message.get("content"), f"{field}.content", role)
        if message_images and index > 0:
            raise RequestError(message_images[0][1], "images are accepted in the first user message only (SkyEye "
                               "sees its image at the start of the conversation)")  # fmt: skip
        images += message_images
        try:
            if role == "assistant":
                history.answer(text)
            elif index == len(messages) - 1:
                question = text
            else:
                history.ask(text)
        except PromptError as err:
            raise RequestError(f"{field}.content", str(err)) from None
    if len(messages) % 2 == 0:
        raise RequestError("messages", "the last message must be the user's question")
    if not question.strip():
        raise RequestError(f"messages[{len(messages) - 1}].content", "the question is empty")
    if not images:
        raise RequestError("messages[0].content", "no image: SkyEye answers about an image; add an image_url part")
    if len(images) > 1:
        raise RequestError(images[1][1], "one image per conversation: SkyEye answers about a single image")
    return history, question, *images[0]


def _content(content: Any, field: str, role: str) -> tuple[str, list[tuple[str, str]]]:
    """A message's text (parts joined with spaces) and its image URLs with their fields."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(field, "must be a string or a list of content parts")
    texts, images = [], []
    for number, part in enumerate(content):
        where = f"{field}[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and role == "user":
            images.append((_image_url(part.get("image_url"), f"{where}.image_url"), f"{where}.image_url"))
        else:
            accepted = "text and image_url parts" if role == "user" else "text parts"
            raise RequestError(where, f"unsupported content part {kind!r}; a {role} message takes {accepted}")
    return " ".join(text.strip() for text in texts if text.strip()), images


def _image_url(value: Any, field: str) -> str:
    """`image_url` as an object {"url": ...} or as a bare string."""
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise RequestError(field, 'give the image as {"url": "data:image/png;base64,..."} or as that string')
    return url
