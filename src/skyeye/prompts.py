"""The prompt language of SkyEyeGPT / MiniGPT-v2, in one place.

A conversation about one or more images is rendered as

    <s>[INST] <Img><ImageHere></Img> [caption] Briefly describe this image. [/INST] answer</s><s>[INST] next [/INST]

Rendering yields segments rather than one string because MiniGPT-v2 tokenises the text around each
`<ImageHere>` separately and splices the image embeddings in between; BOS and EOS are segments of their
own, so they become token ids and never text a tokenizer might split. Every turn opens with BOS, as
MiniGPT-v2 trains and chats (`"<s>" + "[INST] ... [/INST]"` for each follow-up question). Each segment also
says whether the model learns it (assistant answers and their end token) or not (everything the user or
the template wrote).

Prompt styles (`SkyEyeConfig.prompt_style`, the one place a model's style is set):
- `skyeye`: exactly the sequence MiniGPT-v2 trains on (one BOS per turn);
- `minigptv2`: the prompt of MiniGPT-v2's evaluation scripts and demo, whose text starts with `<s>[INST]`
  while the tokenizer adds a BOS of its own: two BOS at the very start, otherwise identical. Released
  SkyEyeGPT / MiniGPT-v2 weights were evaluated this way.

Task identifiers tell the model which skill is asked for. User-facing task names map onto them here and
nowhere else:

| task name          | identifier    | meaning                                                     |
|--------------------|---------------|-------------------------------------------------------------|
| caption            | [caption]     | short caption of the image (or video frame)                 |
| vqa                | [vqa]         | question answering with a short answer                      |
| scene              | [vqa]         | scene classification phrased as a question                  |
| grounding, refer   | [refer]       | referring expression -> one box `{<x1><y1><x2><y2>}`        |
| identify, reg      | [identify]    | box -> referring expression (REG)                           |
| detection          | [detection]   | phrase -> all its boxes `<p>phrase</p> {box}<delim>{box}`   |
| grounded-caption   | [grounding]   | detailed caption with grounded phrases                      |
| chat               | (none)        | free conversation                                           |
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_SLOT = "<Img><ImageHere></Img>"
INSTRUCTION_TEMPLATE = "[INST] {} [/INST]"
BOS, EOS = "<s>", "</s>"
PROMPT_STYLES = ("skyeye", "minigptv2")  # see the module docstring
# MiniGPT-v2 trains on one BOS per turn whatever prompt its evaluation and demo use, and so does SkyEye.
TRAINING_STYLE = "skyeye"

IDENTIFIERS = ("[caption]", "[vqa]", "[refer]", "[identify]", "[detection]", "[grounding]")
TASKS: dict[str, str | None] = {
    "caption": "[caption]",
    "vqa": "[vqa]",
    "scene": "[vqa]",
    "grounding": "[refer]",
    "refer": "[refer]",
    "identify": "[identify]",
    "reg": "[identify]",
    "detection": "[detection]",
    "grounded-caption": "[grounding]",
    "chat": None,
}


class PromptError(ValueError):
    """A conversation that cannot be rendered (unknown task, empty question, misplaced answer)."""


def identifier_of(text: str) -> str | None:
    stripped = text.lstrip()
    return next((ident for ident in IDENTIFIERS if stripped.startswith(ident)), None)


def with_task(text: str, task: str | None) -> str:
    """Prefixes the task identifier unless the text already starts with one."""
    if task is None or identifier_of(text) is not None:
        return text.strip()
    if task not in TASKS:
        raise PromptError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    ident = TASKS[task]
    return text.strip() if ident is None else f"{ident} {text.strip()}"


@dataclass
class Turn:
    user: str
    assistant: str | None = None


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered conversation: text, an image slot, or a begin / end token."""

    kind: str  # "bos" | "text" | "image" | "eos"
    text: str = ""
    learn: bool = False
    image_index: int = -1


@dataclass
class Conversation:
    """A multi-turn conversation about `num_images` images (several images: video frames).

    The images are placed in the first user turn, as MiniGPT-v2 does.
    """

    num_images: int = 1
    turns: list[Turn] = field(default_factory=list)

    def ask(self, text: str, task: str | None = None) -> Conversation:
        if self.turns and self.turns[-1].assistant is None:
            raise PromptError("the previous question has no answer yet")
        text = with_task(text, task)
        if not text:
            raise PromptError("the question is empty")
        self.turns.append(Turn(text))
        return self

    def answer(self, text: str) -> Conversation:
        if not self.turns or self.turns[-1].assistant is not None:
            raise PromptError("there is no open question to answer")
        self.turns[-1].assistant = text.strip()
        return self

    def copy(self) -> Conversation:
        return Conversation(self.num_images, [Turn(t.user, t.assistant) for t in self.turns])

    def segments(self, style: str) -> list[Segment]:
        """Renders every turn in a prompt style (PROMPT_STYLES); an unanswered last turn ends the prompt."""
        if not self.turns:
            raise PromptError("the conversation has no turns")
        if style not in PROMPT_STYLES:
            raise PromptError(f"unknown prompt style {style!r}; known styles: {', '.join(PROMPT_STYLES)}")
        pieces = [Segment("bos", BOS)] if style == "minigptv2" else []
        for number, turn in enumerate(self.turns):
            if turn.assistant is None and number != len(self.turns) - 1:
                raise PromptError(f"turn {number + 1} has no answer but is not the last turn")
            pieces.append(Segment("bos", BOS))
            pieces.extend(self._user_segments(turn.user, with_images=number == 0))
            if turn.assistant is not None:
                pieces.append(Segment("text", turn.assistant, learn=True))
                pieces.append(Segment("eos", EOS, learn=True))
        return pieces

    def _user_segments(self, user: str, with_images: bool) -> list[Segment]:
        if not with_images or self.num_images == 0:
            return [Segment("text", INSTRUCTION_TEMPLATE.format(user))]
        slots = " ".join([IMAGE_SLOT] * self.num_images)
        text_pieces = INSTRUCTION_TEMPLATE.format(f"{slots} {user}").split(IMAGE_PLACEHOLDER)
        pieces = [Segment("text", text_pieces[0])]
        for index, text in enumerate(text_pieces[1:]):
            pieces.append(Segment("image", IMAGE_PLACEHOLDER, image_index=index))
            pieces.append(Segment("text", text))
        return pieces


def render_text(segments: list[Segment]) -> str:
    """The conversation as one human-readable string (for logs and `--json` output)."""
    return "".join(s.text if s.kind != "text" or not s.learn else f" {s.text}" for s in segments)
