"""Concurrent requests answered together: one worker thread, batched `model.ask_many` calls.

A request is admitted first (`admit`): at most `max_pending` are admitted at once, counting those still being
read and decoded, waiting, or generating; one more is refused with `QueueFull` (HTTP 429) instead of growing
a queue without limit. A decoded request is submitted as a `Job`. The worker takes the oldest job and the
jobs behind it that decode the same way (greedy, or sampling with the same temperature and top_p) up to
`max_batch`. A batch that is not full waits for the admitted requests still being read or decoded, until its
oldest job has waited `window_s` since it was submitted: a burst of requests shares one generate call even
though each takes a few milliseconds to decode, a lone request does not wait at all, and jobs that queued up
while the worker was generating do not wait again. A job with a `seed` runs alone, so that its answer depends
on nothing else.

Every row of a batch is followed token by token by `RowTracker`, a transformers stopping criterion, which
`generate` calls after each step with the tokens generated so far (on input embeddings these are the answer
tokens only). It sends a streaming job its new text as it comes, so streamed and whole answers share batches,
and ends a row at its end token, its first stop string, its own `max_tokens`, or when its job is cancelled (a
client that went away): the row is then padded while the others go on, and a batch whose rows have all ended
stops. The tracker keeps only each row's tokens and text, and a finished job keeps nothing: the client gets a
`Finished` event and the worker forgets it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from skyeye.images import LoadedImage
from skyeye.prompts import Conversation

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Every slot is taken (HTTP 429: the client may retry later)."""


class ServerClosing(Exception):
    """The server is shutting down (HTTP 503)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None  # None or 0: greedy
    top_p: float | None = None
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return not self.temperature

    @property
    def batch_key(self) -> tuple | None:
        """Jobs with equal keys share a batch; None (a seeded job) runs alone."""
        if self.seed is not None:
            return None
        return ("greedy",) if self.greedy else ("sample", self.temperature, self.top_p)

    def generate_options(self) -> dict:
        if self.greedy:
            return {}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p or 1.0}


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    text: str
    finish_reason: str  # stop | length | cancelled
    completion_tokens: int  # generated tokens, the end token included
    batch_size: int


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Delta | Finished | Failed


@dataclass(eq=False)  # jobs are told apart by identity
class Job:
    image: LoadedImage
    question: str
    history: Conversation
    task: str | None
    max_tokens: int
    deliver: Callable[[Event], None]  # called from the worker thread
    stop: tuple[str, ...] = ()
    sampling: Sampling = Sampling()
    stream: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = 0.0  # time.monotonic() when queued


class Admission:
    """One admitted request; `release` (once, when its answer is sent or its client gone) frees its slot."""

    def __init__(self, batcher: Batcher):
        self.batcher, self.submitted, self.released = batcher, False, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.batcher._release(self)


@dataclass
class Counters:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0


class Batcher:
    def __init__(self, model, max_batch: int = 8, max_pending: int = 64, window_s: float = 0.1):
        if max_batch < 1 or max_pending < 1 or window_s < 0:
            raise ValueError(f"max_batch and max_pending must be positive, window_s not negative; got {max_batch}, "
                             f"{max_pending}, {window_s}")  # fmt: skip
        self.model, self.max_batch, self.max_pending, self.window_s = model, max_batch, max_pending, window_s
        self.counters = Counters()
        self._jobs: deque[Job] = deque()
        self._changed = threading.Condition()
        self._admitted = 0
        self._preparing = 0  # admitted, not yet submitted: being read or decoded
        self._closed = False
        self._worker: threading.Thread | None = None

    @property
    def admitted(self) -> int:
        return self._admitted

    def start(self) -> None:
        self._worker = threading.Thread(target=self._run, name="skyeye-serve-batcher", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Stops the worker after its batch; jobs still waiting get `Failed(ServerClosing)`."""
        with self._changed:
            self._closed = True
            waiting, self._jobs = list(self._jobs), deque()
            self._changed.notify_all()
        for job in waiting:
            job.deliver(Failed(ServerClosing("the server is shutting down")))
        if self._worker is not None:
            self._worker.join()

    def admit(self) -> Admission:
        """Admits one request for its whole life (`Admission.release` when it ends); raises `QueueFull` or
        `ServerClosing` when it cannot."""
        with self._changed:
            if self._closed:
                raise ServerClosing("the server is shutting down")
            if self._admitted >= self.max_pending:
                raise QueueFull(f"the server is busy: {self._admitted} requests are in progress; retry later")
            self._admitted += 1
            self._preparing += 1
        return Admission(self)

    def submit(self, job: Job, admission: Admission) -> None:
        """Queues the job of an admitted request."""
        with self._changed:
            if self._closed:
                raise ServerClosing("the server is shutting down")
            job.submitted_at = time.monotonic()
            self._jobs.append(job)
            admission.submitted = True
            self._preparing -= 1
            self._changed.notify_all()

    def _release(self, admission: Admission) -> None:
        with self._changed:
            self._admitted -= 1
            if not admission.submitted:
                self._preparing -= 1
            self._changed.notify_all()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._generate(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._changed:
            while not self._closed and not self._take_live():
                self._changed.wait()
            if self._closed:
                return None
            first = self._jobs.popleft()
            batch = [first]
            key = first.sampling.batch_key
            deadline = first.submitted_at + self.window_s
            while key is not None and len(batch) < self.max_batch:
                batch += self._take_matching(key, self.max_batch - len(batch))
                remaining = deadline - time.monotonic()
                if len(batch) == self.max_batch or self._preparing == 0 or remaining <= 0 or self._closed:
                    break
                self._changed.wait(remaining)
            return batch

    def _take_live(self) -> bool:
        """Drops cancelled jobs from the front; whether a live one is left."""
        while self._jobs and self._jobs[0].cancelled.is_set():
            self._jobs.popleft()
        return bool(self._jobs)

    def _take_matching(self, key: tuple, limit: int) -> list[Job]:
        live = [job for job in self._jobs if not job.cancelled.is_set()]
        taken = [job for job in live if job.sampling.batch_key == key][:limit]
        self._jobs = deque(job for job in live if job not in taken)
        return taken

    def _generate(self, batch: list[Job]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        tracker = RowTracker(batch, self.model.tokenizer)
        sampling = batch[0].sampling
        try:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            self.model.ask_many(
                [job.image for job in batch], [job.question for job in batch],
                tasks=[job.task for job in batch], histories=[job.history for job in batch],
                batch_size=len(batch), max_new_tokens=max(job.max_tokens for job in batch),
                stopping_criteria=StoppingCriteriaList([tracker]), **sampling.generate_options(),
            )  # fmt: skip
        except Exception as err:  # every job of the batch hears of it; the worker goes on
            log.exception("generation failed for a batch of %d", len(batch))
            for job in batch:
                job.deliver(Failed(err))
            return
        self.counters.requests += len(batch)
        self.counters.batches += 1
        self.counters.largest_batch = max(self.counters.largest_batch, len(batch))
        for row, job in enumerate(batch):
            job.deliver(tracker.finish(row))


class RowTracker:
    """A transformers stopping criterion that follows every row of a batch (see the module doc)."""

    def __init__(self, jobs: list[Job], tokenizer):
        self.rows = [_Row(job, tokenizer) for job in jobs]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.tolist()
        ended = [row.step(tokens) for row, tokens in zip(self.rows, generated, strict=True)]
        return torch.tensor(ended, dtype=torch.bool, device=input_ids.device)

    def finish(self, index: int) -> Finished:
        row = self.rows[index]
        return Finished(row.final_text(), row.reason or "length", row.generated, len(self.rows))


class _Row:
    def __init__(self, job: Job, tokenizer):
        self.job, self.tokenizer = job, tokenizer
        self.tokens: list[int] = []  # the answer's tokens, without its end token
        self.generated = 0
        self.reason: str | None = None
        self.sent = ""  # the text streamed so far

    def step(self, tokens: list[int]) -> bool:
        """Takes the row's tokens so far; whether the row has ended."""
        if self.reason is not None:
            return True
        self.generated = len(tokens)
        ended_by_eos = tokens[-1] == self.tokenizer.eos_token_id
        self.tokens = tokens[:-1] if ended_by_eos else tokens
        text, stopped = self._text() if (self.job.stream or self.job.stop) else ("", False)
        if ended_by_eos or stopped:
            self.reason = "stop"
        elif self.job.cancelled.is_set():
            self.reason = "cancelled"
        elif self.generated >= self.job.max_tokens:
            self.reason = "length"
        if self.job.stream:
            self._send(text.strip() if self.reason else self._settled(text.lstrip()))
        return self.reason is not None

    def final_text(self) -> str:
        return self._text()[0].strip()

    def _text(self) -> tuple[str, bool]:
        """The decoded answer up to its first stop string, and whether one was found."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        found = [text.find(stop) for stop in self.job.stop if stop in text]
        return (text[: min(found)], True) if found else (text, False)

    def _settled(self, text: str) -> str:
        """The part of an unfinished answer that the next tokens cannot change: not a trailing space (the final
        answer is stripped), a half-decoded character, or the start of a stop string."""
        text = text.rstrip().rstrip("\ufffd")
        held = max((len(s) for stop in self.job.stop for s in _prefixes(stop) if text.endswith(s)), default=0)
        return text[: len(text) - held]

    def _send(self, text: str) -> None:
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.job.deliver(Delta(text[len(self.sent) :]))
            self.sent = text


def _prefixes(stop: str) -> list[str]:
    """The proper prefixes of a stop string, which may grow into it with the next token."""
    return [stop[:length] for length in range(1, len(stop))]
