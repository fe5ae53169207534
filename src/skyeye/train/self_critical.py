"""Self-critical caption training (`self_critical:` in a training config): a trained decoder's captions are tuned
for the metric they are scored by, as captioning models have been since Rennie et al. (CVPR 2017).

Cross-entropy on five references per image teaches the decoder each reference's own wording, and greedy decoding
then follows whichever opening it met most often, into details the image's annotators did not agree on. Here the
decoder instead samples `samples` captions per image, each one is scored by sentence BLEU-4 (pycocoevalcap) against
all of the image's references, and the log-probability of each sample is raised or lowered by how much better or
worse it scored than the image's other samples (that mean is the baseline, as in Luo 2020: no greedy pass needed).
With `xe_weight`, cross-entropy on the asked record's own caption is added: the reward alone lets the wording drift
on images unlike the training set's, and that term holds it back at some cost in BLEU.

The records are caption records (one image, one turn); an image's references are the answers of all its records,
and each step asks one of its records' questions. The vision tower is frozen and sees the image flipped and
turned (not when a reference names a side); the model's other trainable parts learn. Images are decoded once at
the tower's input side. The phase runs in a stage with `steps: 0`, on the main process, checkpoints every
`save_every` epochs and resumes as the tower phase does (train/tower.py); on the `val` split of the same records it
reports greedy corpus BLEU-4.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from skyeye.images import load_image
from skyeye.model.answer import generated_mask
from skyeye.model.inputs import collate, encode
from skyeye.model.skyeye import parameter_part
from skyeye.prompts import TRAINING_STYLE, Conversation
from skyeye.settings import ConfigError, to_plain
from skyeye.train import state
from skyeye.train.config import AugmentConfig, SelfCriticalConfig
from skyeye.train.records import RecordIndex
from skyeye.train.samples import has_direction_words
from skyeye.train.tower import CHECKPOINT_DIR, augmented, finish_phase, say, train_epochs

WEIGHTS_FILE, REPORT_FILE = "decoder.safetensors", "self_critical.json"
VIEWS = AugmentConfig(flip=True, rotate=True)


@dataclass
class CaptionedImages:
    pixels: torch.Tensor  # uint8 [N, 3, S, S]
    questions: list[list[str]]  # per image, the questions its records ask
    answers: list[list[str]]  # per image, its records' captions as written, in the order of `questions`
    fixed: list[bool]  # per image: a reference names a side, so the image is never flipped or turned

    @cached_property
    def references(self) -> list[list[str]]:
        """Per image, its captions as words (see `words`): what BLEU compares with."""
        return [[words(answer) for answer in answers] for answers in self.answers]


def words(text: str) -> str:
    """Lower case without punctuation, as pycocoevalcap's PTB tokenizer leaves these captions; the reward is
    computed every step, where starting its Java process each time would cost more than the step."""
    return " ".join(re.sub(r"[^a-z0-9'\- ]", " ", text.lower()).split())


def captioned_images(index: RecordIndex, size: int, progress: bool, what: str) -> CaptionedImages:
    from tqdm import tqdm

    by_image: dict[Path, tuple[list, list, list]] = {}  # questions, answers, records
    for number in range(len(index)):
        record, root = index.record(number)
        if len(record.images) != 1 or len(record.turns) != 1:
            raise ConfigError(f"{record.id}: self_critical needs caption records of one image and one turn, "
                              f"not {len(record.images)} images and {len(record.turns)} turns")  # fmt: skip
        questions, answers, records = by_image.setdefault(root / record.images[0], ([], [], []))
        questions.append(record.turns[0]["user"])
        answers.append(record.turns[0]["assistant"])
        records.append(record)
    pixels = []
    for path in tqdm(by_image, desc=f"loading {what} images", unit=" images", disable=not progress):
        image = load_image(path).image.resize((size, size), resample=3)  # bicubic, as the model's own resize
        pixels.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    groups = list(by_image.values())
    return CaptionedImages(torch.stack(pixels), [g[0] for g in groups], [g[1] for g in groups],
                           [any(has_direction_words(r) for r in g[2]) for g in groups])  # fmt: skip


def bleu4(hypotheses: list[str], references: list[list[str]]) -> tuple[float, torch.Tensor]:
    """pycocoevalcap's BLEU-4 of the hypotheses over all of them, and each one's own."""
    from pycocoevalcap.bleu.bleu import Bleu

    # An empty hypothesis scores 0; pycocoevalcap refuses one.
    hyps = {i: [h or "<empty>"] for i, h in enumerate(hypotheses)}
    corpus, per_item = Bleu(4).compute_score(dict(enumerate(references)), hyps, verbose=0)
    return float(corpus[3]), torch.tensor(per_item[3], dtype=torch.float32)


def encoded_batch(model, conversations: list[Conversation], style: str, padding: str) -> dict[str, torch.Tensor]:
    encoded = [
        encode(c.segments(style), model.tokenizer, model.cfg.visual_tokens_per_image,
               max_answer_tokens=model.cfg.max_txt_len, max_length=model.cfg.max_context_len)
        for c in conversations
    ]  # fmt: skip
    return collate(encoded, model.tokenizer.pad_token_id, padding)


def prompt_batch(model, questions: list[str]) -> dict[str, torch.Tensor]:
    """The questions as left-padded prompts, as the model is asked at inference."""
    conversations = [Conversation(num_images=1).ask(question) for question in questions]
    return encoded_batch(model, conversations, model.cfg.prompt_style, "left")


def caption_batch(model, questions: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
    """The questions with their captions as answers, encoded as instruction tuning encodes them (labels included)."""
    conversations = [Conversation(num_images=1).ask(q).answer(a) for q, a in zip(questions, answers, strict=True)]
    return encoded_batch(model, conversations, TRAINING_STYLE, "right")


class SelfCritical:
    def __init__(self, model, cfg: SelfCriticalConfig):
        self.model, self.cfg = model, cfg
        vision = model.cfg.vision
        self.mean = torch.tensor(vision.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(vision.std).view(1, 3, 1, 1)

    def features(self, unit_pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.visual_features((unit_pixels - self.mean) / self.std)

    def generate(self, batch: dict, features: torch.Tensor, **how) -> torch.Tensor:
        tokenizer = self.model.tokenizer
        with torch.no_grad():
            embeds = self.model.embed(batch["input_ids"], batch["image_mask"], features=features)
            return self.model.llama_model.generate(
                inputs_embeds=embeds, attention_mask=batch["attention_mask"], max_new_tokens=self.cfg.max_new_tokens,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **how,
            )  # fmt: skip

    def decode(self, tokens: torch.Tensor) -> list[str]:
        masks = generated_mask(tokens, self.model.tokenizer.eos_token_id).bool()
        return [words(self.model.tokenizer.decode(row[mask], skip_special_tokens=True)) for row, mask in
                zip(tokens, masks, strict=True)]  # fmt: skip

    def log_probs(self, batch: dict, features: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each generated token's log-probability after its prompt (`batch`, left-padded, and its images' features),
        and the mask of the tokens up to each row's end token."""
        prompt = self.model.embed(batch["input_ids"], batch["image_mask"], features=features)
        answer = self.model.llama_model.get_input_embeddings()(tokens)
        mask = generated_mask(tokens, self.model.tokenizer.eos_token_id)
        attention = torch.cat([batch["attention_mask"], mask], 1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)  # left-padded prompts: count only real tokens
        logits = self.model.llama_model(inputs_embeds=torch.cat([prompt, answer], 1), attention_mask=attention,
                                        position_ids=positions).logits  # fmt: skip
        start = prompt.shape[1]
        chosen = torch.log_softmax(logits[:, start - 1 : -1].float(), -1).gather(-1, tokens.unsqueeze(-1))
        return chosen.squeeze(-1), mask

    def loss(self, batch: dict, features: torch.Tensor, references: list[list[str]],
             captions: dict | None = None) -> tuple[torch.Tensor, float]:  # fmt: skip
        """One step's loss for a batch of images (prompts and tower features), and its samples' mean reward: the
        policy gradient, plus `xe_weight` times the cross-entropy of `captions` (a `caption_batch` of the same
        images) when the config gives one."""
        k = self.cfg.samples
        repeated = {name: value.repeat_interleave(k, 0) for name, value in batch.items()}
        each = features.repeat_interleave(k, 0)
        self.model.eval()
        sampled = self.generate(repeated, each, do_sample=True, top_k=0, top_p=1.0, temperature=1.0)
        _, rewards = bleu4(self.decode(sampled), [refs for refs in references for _ in range(k)])
        rewards = rewards.view(-1, k)
        advantage = (rewards - (rewards.sum(1, keepdim=True) - rewards) / (k - 1)).view(-1)
        self.model.train()
        log_probs, mask = self.log_probs(repeated, each, sampled)
        loss = -(advantage.unsqueeze(1) * log_probs * mask).sum() / mask.sum().clamp(min=1)
        if self.cfg.xe_weight and captions is not None:
            loss = loss + self.cfg.xe_weight * self.model(**captions, features=features).loss
        return loss, float(rewards.mean())

    def greedy_bleu4(self, data: CaptionedImages, batch_size: int = 32) -> float:
        self.model.eval()
        hypotheses = []
        for start in range(0, len(data.references), batch_size):
            chosen = range(start, min(start + batch_size, len(data.references)))
            batch = prompt_batch(self.model, [data.questions[i][0] for i in chosen])
            features = self.features(data.pixels[start : chosen.stop].float().div(255))
            hypotheses += self.decode(self.generate(batch, features, do_sample=False, num_beams=1))
        return bleu4(hypotheses, data.references)[0]


def train_self_critical(model, cfg: SelfCriticalConfig, out: Path, seed: int, progress: bool = True) -> dict:
    """Tunes the model's trainable parts but its tower in place, writes out/decoder.safetensors and
    out/self_critical.json, returns the report; continues from out/checkpoint when a killed run left one."""
    if model.tokenizer is None:
        raise ConfigError("self_critical needs a model with a tokenizer")
    size = model.cfg.vision.image_size
    train_index = RecordIndex(cfg.data, 0)
    try:
        val_index = RecordIndex([replace(spec, splits=["val"]) for spec in cfg.data], 0)
    except ConfigError:
        val_index = None
    train = captioned_images(train_index, size, progress, "self-critical")
    val = captioned_images(val_index, size, progress, "self-critical val") if val_index else None
    parts = [part for part in model.cfg.trainable if part != "vision"]
    say(f"self-critical captions: {len(train.references):,} images at {size} px, {cfg.samples} samples each, "
        f"learning {', '.join(parts)}" + (f"; {len(val.references):,} val images" if val else ""))  # fmt: skip

    torch.manual_seed(seed)
    model.set_trainable(parts)  # the tower, frozen, goes to eval mode: its batch norms keep their statistics
    learner = SelfCritical(model, cfg)
    learning = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(learning, lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train.references) / cfg.batch_size)
    phase = {"self_critical": to_plain(cfg), "seed": seed, "parts": parts, "train_images": len(train.references)}

    def epoch_loss() -> float:
        from tqdm import tqdm

        order = torch.randperm(len(train.references), generator=generator)
        total = 0.0
        # An epoch takes minutes here, not seconds as in the other phases: its steps get a bar of their own.
        starts = tqdm(range(0, len(order), cfg.batch_size), desc="steps", unit=" steps", leave=False,
                      disable=not progress)  # fmt: skip
        for start in starts:
            chosen = order[start : start + cfg.batch_size].tolist()
            draws = torch.rand(len(chosen), generator=generator).tolist()
            picked = [int(draw * len(train.questions[i])) for i, draw in zip(chosen, draws, strict=True)]
            questions = [train.questions[i][j] for i, j in zip(chosen, picked, strict=True)]
            answers = [train.answers[i][j] for i, j in zip(chosen, picked, strict=True)]
            views = augmented(train.pixels[chosen], VIEWS, generator)
            for row, i in enumerate(chosen):
                if train.fixed[i]:
                    views[row] = train.pixels[i].float().div(255)
            captions = caption_batch(model, questions, answers) if cfg.xe_weight else None
            loss, reward = learner.loss(prompt_batch(model, questions), learner.features(views),
                                        [train.references[i] for i in chosen], captions)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(learning, 1.0)
            optimizer.step()
            schedule.step()
            total += reward
        return total / steps_per_epoch

    history = train_epochs(out / CHECKPOINT_DIR, phase, model, optimizer, schedule, generator, cfg, epoch_loss,
                           (lambda: learner.greedy_bleu4(val)) if val is not None else None,
                           metric=("val_bleu4", "val greedy BLEU-4"), title="self-critical captions",
                           name="self-critical", progress=progress, figure="mean_sample_bleu4")  # fmt: skip
    model.requires_grad_(False).eval()
    report = {"parts": parts, "train_images": len(train.references),
              "val_images": len(val.references) if val else 0, "history": history}  # fmt: skip
    finish_phase(out, REPORT_FILE, report, WEIGHTS_FILE, tuned_weights(model, parts))
    return report


def tuned_weights(model, parts: list[str]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in model.state_dict().items() if parameter_part(name) in parts}


def load_self_critical(model, out: Path) -> bool:
    """Gives `model` the weights a finished phase left in `out`; False when there is none."""
    weights = out / WEIGHTS_FILE
    if not weights.is_file():
        return False
    parts = [part for part in model.cfg.trainable if part != "vision"]
    model.load_state_dict(state.read_run_weights(weights, tuned_weights(model, parts)), strict=False)
    return True
