"""`skyeye serve` under load: throughput and latency for 1, 8 and 32 concurrent clients, batched against
`--max-batch 1` (one request per generate call) in the same run.

    python bench/serve_load.py [--model M] [--device cpu] [--max-batch 32] [--requests 16] [--max-tokens 32]
                               [--batch-window-ms MS]

Both servers are the real command (`python -m skyeye.cli serve`) on free loopback ports, up together and
measured level by level. Every client sends
its next request as soon as the last is answered (a closed loop) until the level's requests are done: at
least `--requests`, and two per client. The requests ask about examples/scene.png with a rotating set of
questions, greedy, `--max-tokens` each, identical for both servers, whose answers must be identical too. Each
level starts with an unmeasured round of one request per client (torch prepares its kernels for each new
batch shape once, which a long-running server has long done).
Printed per level: the mean batch size of the generate calls, requests per second, generated tokens per
second, p50 and p95 latency, and the ratio of the batched server's throughput to the unbatched one's.

On a CPU shared with other torch processes, run it with OMP_NUM_THREADS=1: OpenMP threads of several processes
spinning on the same cores made every generate call 10 to 30 times slower, batched or not, on this project's
2-core machine (the servers inherit the variable).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)
QUESTIONS = ["[caption] Briefly describe this image.", "[vqa] What is in the image?", "[detection] car",
             "[vqa] Is there a road?", "[refer] the road", "Describe this image in detail."]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="as `skyeye serve --model` (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=32, help="of the batched server (default 32)")
    parser.add_argument("--requests", type=int, default=16, help="requests per level, at least 2 per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-window-ms", type=float, help="of the batched server (default: the command's)")
    args = parser.parse_args()

    image = "data:image/png;base64," + base64.b64encode((REPO / "examples" / "scene.png").read_bytes()).decode()
    results, answers = {}, {}
    with server(args, args.max_batch) as batched, server(args, 1) as unbatched:
        servers = {args.max_batch: batched, 1: unbatched}
        bodies = [request_body(batched[1], image, question, args.max_tokens) for question in QUESTIONS]
        # Both servers are up and measured level by level, one after the other, so that a change in what else
        # the machine runs weighs on both alike.
        for clients in LEVELS:
            count = max(args.requests, 2 * clients)
            for max_batch, (base, _) in servers.items():
                # Unmeasured first round: torch sets up its kernels for each new batch shape once.
                asyncio.run(run_level(base, bodies, clients, clients))
                before = httpx.get(f"{base}/health").json()
                results[max_batch, clients], answers[max_batch, clients] = asyncio.run(
                    run_level(base, bodies, clients, count)
                )
                after = httpx.get(f"{base}/health").json()
                results[max_batch, clients]["batch"] = count / (after["batches"] - before["batches"])

    window = "default" if args.batch_window_ms is None else f"{args.batch_window_ms:g} ms"
    print(f"model: {args.model or 'bundled'}  device: {args.device}  max_tokens: {args.max_tokens}  "
          f"batch window: {window}  CPUs: {os.cpu_count()}  OMP_NUM_THREADS: {os.environ.get('OMP_NUM_THREADS', '-')}  "
          f"load average: {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'clients':>7}  {'max-batch':>9}  {'requests':>8}  {'mean batch':>10}  {'req/s':>7}  {'tok/s':>7}  "
          f"{'p50 s':>6}  {'p95 s':>6}")  # fmt: skip
    for clients in LEVELS:
        for max_batch in (args.max_batch, 1):
            r = results[max_batch, clients]
            print(f"{clients:>7}  {max_batch:>9}  {r['requests']:>8}  {r['batch']:>10.1f}  {r['rps']:>7.2f}  "
                  f"{r['tps']:>7.1f}  {r['p50']:>6.2f}  {r['p95']:>6.2f}")  # fmt: skip
    for clients in LEVELS:
        ratio = results[args.max_batch, clients]["rps"] / results[1, clients]["rps"]
        same = answers[args.max_batch, clients] == answers[1, clients]
        print(f"{clients:>2} clients: batched / --max-batch 1 throughput = {ratio:.2f}x; same answers: {same}")


def request_body(model_id: str, image: str, question: str, max_tokens: int) -> dict:
    parts = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": image}}]
    return {"model": model_id, "max_tokens": max_tokens, "messages": [{"role": "user", "content": parts}]}


async def run_level(base: str, bodies: list[dict], clients: int, count: int) -> tuple[dict, list[str]]:
    """`clients` closed-loop clients sending `count` requests in all; throughput, latencies and the answers."""
    queue = list(range(count))
    latencies, tokens, answers = [0.0] * count, [0] * count, [""] * count

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            number = queue.pop(0)
            started = time.perf_counter()
            response = await http.post(f"{base}/v1/chat/completions", json=bodies[number % len(bodies)])
            response.raise_for_status()
            latencies[number] = time.perf_counter() - started
            reply = response.json()
            tokens[number] = reply["usage"]["completion_tokens"]
            answers[number] = reply["choices"][0]["message"]["content"]

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    stats = {"requests": count, "rps": count / elapsed, "tps": sum(tokens) / elapsed,
             "p50": statistics.median(ordered), "p95": ordered[min(count - 1, round(0.95 * (count - 1)))]}  # fmt: skip
    return stats, answers


class server:
    """`skyeye serve` in a child process for the length of a `with`; yields its base URL and model name."""

    def __init__(self, args, max_batch: int):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        model = ["--model", args.model] if args.model else []
        window = ["--batch-window-ms", str(args.batch_window_ms)] if args.batch_window_ms is not None else []
        self.command = [sys.executable, "-m", "skyeye.cli", "serve", "--port", str(self.port), "--device",
                        args.device, "--max-batch", str(max_batch), "--max-queue", "64", *model, *window]  # fmt: skip

    def __enter__(self) -> tuple[str, str]:
        self.log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall the server
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"skyeye serve exited {self.process.returncode}:\n{self.log.read()}")
            try:
                return base, httpx.get(f"{base}/health", timeout=1).json()["model"]
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("skyeye serve did not answer /health within 300 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


if __name__ == "__main__":
    main()
