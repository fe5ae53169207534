"""Time to first token in the web app, as a user sees it: headless Chromium asks, the clock stops when the
first character of the answer appears in the conversation. Also prints the server-side figures of the same
answers (the app's status line) and the ratio of first token to the complete answer.

    python bench/web_first_token.py [--model M] [--repeats 10]

Needs Debian's chromium (/usr/bin/chromium) and Playwright.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from skyeye.data.synth import render_scene
from skyeye.model.loading import default_source, load_model
from skyeye.serve.web.app import build_app

FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_source())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--task", default="Caption", help="a task of the app (default Caption: long answers)")
    parser.add_argument("--question", default="", help="what to type (default: the task's own default)")
    parser.add_argument("--screenshot", type=Path, help="save the page after the first answer here")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    scene = folder / "scene.png"
    render_scene(seed=5, size=256)[0].save(scene)
    app = build_app(load_model(args.model), [scene], max_new_tokens=64)
    app.queue()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)

    seen, server_first, server_total = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}")
        page.locator("#upload input[type=file]").set_input_files(str(scene))
        page.locator("#annotated img").wait_for()
        page.locator("#task").get_by_label(args.task, exact=True).check()
        for number in range(1, args.repeats + 1):
            page.locator("#clear").click()
            page.locator("#conversation .message").first.wait_for(state="detached")
            page.locator("#question textarea").fill(args.question)
            started = time.perf_counter()
            page.locator("#send").click()
            page.wait_for_function(
                "() => { const m = document.querySelectorAll('#conversation .message.bot');"
                " return m.length && m[m.length - 1].innerText.trim().length > 0; }",
                polling="raf",
            )
            seen.append(time.perf_counter() - started)
            status = page.locator("#status", has_text="Answer 1: first token after")
            status.wait_for(timeout=60_000)
            first, total = map(float, re.findall(r"([\d.]+) s", status.inner_text()))
            server_first.append(first)
            server_total.append(total)
            if number == 1 and args.screenshot:
                page.screenshot(path=args.screenshot, full_page=True)
        browser.close()
    app.close()

    browser_first, first, total = (statistics.median(values) for values in (seen, server_first, server_total))
    print(f"model: {args.model}; {args.repeats} answers to {args.task} {args.question!r}, medians")
    print(f"  first character visible in the browser: {browser_first:.3f} s")
    print(f"  first token on the server:              {first:.3f} s")
    print(f"  complete answer on the server:          {total:.3f} s")
    print(f"  browser first character / server complete answer: {browser_first / total:.2f}x")


if __name__ == "__main__":
    main()
