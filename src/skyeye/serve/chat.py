"""`skyeye chat`: a terminal conversation about one image, answers streamed token by token.

Lines starting with `/` are commands (`/help` lists them); anything else is a question. The conversation is
an `ImageChat` (skyeye.serve.session), the same object the web app uses.

In a terminal, lines are read with readline: the arrow keys edit the line and recall earlier lines of the
session. Ctrl-C while an answer streams stops that answer, which is then not part of the conversation, and
returns to the prompt; Ctrl-C or Ctrl-D at the prompt leaves (exit status 0). Without a terminal (stdin piped)
it prints no prompts and reads questions to the end of input, so it can be scripted; there Ctrl-C ends the run
(`skyeye: interrupted`, exit status 130).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TextIO

from skyeye.prompts import TASKS
from skyeye.serve.session import ImageChat

HELP = """commands:
  /task NAME     prefix later questions with a task's identifier (NAME: {tasks}; /task none: no prefix)
  /image PATH    talk about another image (starts a new conversation)
  /reset         forget the conversation, keep the image
  /save FILE     write the conversation, its boxes (on the map too, for a GeoTIFF) and the image path to JSON
  /help          this list
  /quit          leave (so does end of input)"""


class TerminalChat:
    """The terminal side of an `ImageChat`: the current task, /commands, and answers written as they come."""

    def __init__(self, model, image: Path, out: TextIO = sys.stdout, max_new_tokens: int = 128):
        self.chat = ImageChat(model, image, max_new_tokens=max_new_tokens)
        self.out = out
        self.task: str | None = None

    def ask(self, question: str) -> None:
        self.out.write("skyeye> ")
        # closing(): an interrupt between two pieces stops the generation now, not when the stream is collected.
        with closing(self.chat.stream(question, self.task)) as pieces:
            for piece in pieces:
                self.out.write(piece)
                self.out.flush()
        self.out.write("\n")
        georeference = self.chat.georeference
        for number, box in enumerate(self.chat.turns[-1].boxes, 1):
            self.out.write(f"  {box.summary(number)}\n")
            for line in georeference.box_lines(box.pixels) if georeference else []:
                self.out.write(f"    {line}\n")

    def command(self, line: str) -> bool:
        """Runs a /command; returns False when the session should end."""
        name, _, argument = line[1:].partition(" ")
        argument = argument.strip()
        if name in ("quit", "exit"):
            return False
        if name == "help":
            self.say(HELP.format(tasks=", ".join(TASKS)))
        elif name == "reset":
            self.chat.reset()
            self.say("conversation cleared")
        elif name == "task":
            if argument not in (*TASKS, "none"):
                self.say(f"unknown task {argument!r}; tasks: {', '.join(TASKS)}, none")
            else:
                self.task = None if argument == "none" else argument
                self.say(f"task: {argument}")
        elif name == "image":
            self.chat.open_image(Path(argument))
            width, height = self.chat.image.original_size
            self.say(f"image: {argument} ({width} x {height}, {self.chat.image.rendering})")
            if self.chat.georeference is not None:
                self.say(f"boxes also on the map: {self.chat.georeference.how}, and in WGS84 lon/lat")
        elif name == "save":
            Path(argument).write_text(json.dumps(self.chat.to_record(), indent=1))
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
    terminal = TerminalChat(model, image, out, max_new_tokens)
    read_line = _terminal_reader() if interactive else lines.readline
    if interactive:
        terminal.say(f"chatting about {image}; /help lists the commands")
    while True:
        line = read_line()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not terminal.command(line):
                    return 0
            else:
                terminal.ask(line)
        except KeyboardInterrupt:
            if not interactive:  # a script is being stopped, not one answer
                raise
            terminal.say("\n(interrupted)" if line.startswith("/") else "\n(answer stopped)")
        except (OSError, ValueError) as err:  # a bad /image or /save path, an over-long conversation
            terminal.say(f"error: {err}")


def _terminal_reader() -> Callable[[], str]:
    """Reads a line at the `you> ` prompt with readline editing and history; "" (end of input) on Ctrl-C/Ctrl-D."""
    import readline  # noqa: F401  (importing it is what gives input() line editing and history)

    def read() -> str:
        try:
            return input("you> ") + "\n"
        except (EOFError, KeyboardInterrupt):
            print()
            return ""

    return read
