"""`skyeye chat`: a terminal conversation about one image, answers streamed token by token.

Lines starting with `/` are commands (`/help` lists them); anything else is a question. The history is the
model's own `Conversation`, so every turn is rendered by the same prompt code as `skyeye ask` and training.
Without a terminal (stdin piped) it prints no prompts and reads questions to the end of input, so it can be
scripted.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from skyeye.images import load_image
from skyeye.prompts import TASKS, Conversation

HELP = """commands:
  /task NAME     prefix later questions with a task's identifier (NAME: {tasks}; /task none: no prefix)
  /image PATH    talk about another image (starts a new conversation)
  /reset         forget the conversation, keep the image
  /save FILE     write the conversation, its boxes and the image path to a JSON file
  /help          this list
  /quit          leave (so does end of input)"""


def text_streamer(tokenizer, out: TextIO):
    """A transformers streamer that writes each decoded piece of the answer to `out` as it is generated."""
    from transformers import TextStreamer

    class ToStream(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text)
            out.flush()

    return ToStream(tokenizer, skip_prompt=True, skip_special_tokens=True)


class ChatSession:
    """One image, its conversation so far, the current task, and the boxes each answer named."""

    def __init__(self, model, image: Path, out: TextIO = sys.stdout, max_new_tokens: int = 128):
        self.model, self.out, self.max_new_tokens = model, out, max_new_tokens
        self.task: str | None = None
        self.open_image(image)

    def open_image(self, path: Path) -> None:
        self.image_path, self.image = Path(path), load_image(path)
        self.reset()

    def reset(self) -> None:
        self.conversation = Conversation(num_images=1)
        self.boxes: list[list[dict]] = []

    def ask(self, question: str) -> None:
        self.out.write("skyeye> ")
        streamer = text_streamer(self.model.tokenizer, self.out)
        answer = self.model.ask(self.image, question, task=self.task, history=self.conversation,
                                max_new_tokens=self.max_new_tokens, streamer=streamer)  # fmt: skip
        self.out.write("\n")
        self.conversation = answer.conversation
        self.boxes.append([asdict(box) for box in answer.boxes])
        for number, box in enumerate(answer.boxes, 1):
            self.out.write(f"  {box.summary(number)}\n")

    def save(self, path: Path) -> None:
        turns = [{"user": turn.user, "assistant": turn.assistant, "boxes": boxes}
                 for turn, boxes in zip(self.conversation.turns, self.boxes, strict=True)]  # fmt: skip
        record = {"image": str(self.image_path), "image_size": list(self.image.original_size), "turns": turns}
        path.write_text(json.dumps(record, indent=1))

    def command(self, line: str) -> bool:
        """Runs a /command; returns False when the session should end."""
        name, _, argument = line[1:].partition(" ")
        argument = argument.strip()
        if name in ("quit", "exit"):
            return False
        if name == "help":
            self.say(HELP.format(tasks=", ".join(TASKS)))
        elif name == "reset":
            self.reset()
            self.say("conversation cleared")
        elif name == "task":
            if argument not in (*TASKS, "none"):
                self.say(f"unknown task {argument!r}; tasks: {', '.join(TASKS)}, none")
            else:
                self.task = None if argument == "none" else argument
                self.say(f"task: {argument}")
        elif name == "image":
            self.open_image(Path(argument))
            self.say(f"image: {argument} ({self.image.original_size[0]} x {self.image.original_size[1]})")
        elif name == "save":
            self.save(Path(argument))
            self.say(f"saved to {argument}")
        else:
            self.say(f"unknown command /{name}; /help lists them")
        return True

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def run_chat(model, image: Path, lines: TextIO = sys.stdin, out: TextIO = sys.stdout,
             max_new_tokens: int = 128) -> int:  # fmt: skip
    interactive = lines.isatty()
    session = ChatSession(model, image, out, max_new_tokens)
    if interactive:
        session.say(f"chatting about {image}; /help lists the commands")
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not session.command(line):
                    return 0
            else:
                session.ask(line)
        except (OSError, ValueError) as err:  # a bad /image or /save path, an over-long conversation
            session.say(f"error: {err}")
