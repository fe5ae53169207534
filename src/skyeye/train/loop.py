"""`skyeye train`: the instruction-tuning loop, one process or many (accelerate: DDP, FSDP, DeepSpeed).

Each optimizer step learns one global batch: `batch_size` records per process, `grad_accum` micro-batches,
on every process. The loss is the sum of token losses divided by the number of learned tokens in the
whole global batch (counted across processes before the forward), so N processes × B records compute
exactly the step that one process computes on N × B records.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from skyeye.model.checkpoint import save_checkpoint
from skyeye.model.inputs import IGNORE_INDEX
from skyeye.model.skyeye import parameter_part
from skyeye.settings import ConfigError, read_yaml_mapping
from skyeye.train import metrics_log, state
from skyeye.train.box_attention import BoxAttentionTargets, box_attention_loss, return_weights_in
from skyeye.train.box_refiner import load_trained_refiner, train_box_refiner
from skyeye.train.config import TrainConfig
from skyeye.train.optim import fused_adam
from skyeye.train.order import BatchOrder
from skyeye.train.records import RecordIndex
from skyeye.train.samples import SampleMaker, collate_samples
from skyeye.train.self_critical import load_self_critical, train_self_critical
from skyeye.train.tower import load_pretrained_tower, pretrain_tower
from skyeye.train.visual_cache import VisualCache

NO_DECAY = ("bias", "norm", "ln_", "lora_")
RUN_CONFIG = "train.yaml"  # the config a run was started with, beside its checkpoints


def parameter_groups(model, weight_decay: float, lr: float, lr_scale: dict[str, float]) -> list[dict]:
    """AdamW groups by part and decay: no weight decay on biases, norms and LoRA factors (MiniGPT-v2's rule
    for biases/norms), and each part's learning rate scaled by `lr_scale` (default 1)."""
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decays = param.ndim >= 2 and not any(k in name for k in NO_DECAY)
            groups.setdefault((parameter_part(name), decays), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0, "lr": lr * lr_scale.get(part, 1.0)}
            for (part, decays), params in groups.items()]  # fmt: skip


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True, accelerator=None):
        from accelerate import Accelerator, DistributedType
        from accelerate.utils import set_seed
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        from skyeye.model.loading import load_model

        self.cfg, self.show_progress = cfg, progress
        # Without cpu=True accelerate ignores a torchrun launch on a machine without GPUs (no gloo group).
        self.accelerator = accelerator or Accelerator(mixed_precision=cfg.precision, cpu=not torch.cuda.is_available())
        self.out = Path(cfg.out)
        set_seed(cfg.seed)
        model = load_model(cfg.model, seed=cfg.seed, image_size=cfg.image_size)
        if cfg.number_line is not None:
            model.set_number_line(cfg.number_line)
        self.box_targets = self._box_attention_targets(model)
        run_phases(model, cfg, self.accelerator, self.show_progress)
        model.set_trainable(cfg.trainable or model.cfg.trainable)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"{cfg.model}: nothing to train (trainable parts: {cfg.trainable or model.cfg.trainable})")
        model.train()
        self.model = model
        self.index = RecordIndex(cfg.data, model.cfg.visual_tokens_per_image)
        world = self.accelerator.num_processes
        self.order = BatchOrder(self.index.lengths, self.index.spec_ids, [d.weight for d in cfg.data],
                                cfg.batch_size * world, cfg.seed, cfg.group_by_length)  # fmt: skip
        max_length = cfg.max_length or model.cfg.max_context_len
        self.maker = SampleMaker(model.cfg, model.tokenizer, cfg.augment, max_length, cfg.seed,
                                 load_pixels=not cfg.cache_visual)  # fmt: skip
        self.cache = None
        groups = parameter_groups(model, cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.lr_scale)
        optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), fused=fused_adam(model))
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, cfg.optim.warmup_steps, cfg.steps, min_lr=cfg.optim.min_lr
        )
        self.wrapped, self.optimizer = self.accelerator.prepare(model, optimizer)
        # FSDP and DeepSpeed shard weights and optimizer states: their checkpoints go through accelerate's
        # save_state/load_state (untested here: no multi-GPU machine); one process or DDP use state.py. The
        # scheduler is not registered with accelerate, which would unpickle it unchecked: state.py keeps it.
        self.sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        self.progress = state.Progress()

    def _box_attention_targets(self, model) -> BoxAttentionTargets | None:
        settings = self.cfg.box_attention
        if not settings.weight:
            return None
        llm = model.cfg.llm
        if max(settings.layers) >= llm.num_layers or max(settings.heads) >= llm.num_heads:
            raise ValueError(f"box_attention: {model.cfg.name} has {llm.num_layers} layers of {llm.num_heads} heads, "
                             f"not layers {settings.layers} / heads {settings.heads}")  # fmt: skip
        return_weights_in(model.llama_model, settings.layers)
        return BoxAttentionTargets(model.cfg, model.tokenizer)

    def base_lr(self) -> float:
        """optim.lr as scheduled now (parts with an lr_scale run at a multiple of it)."""
        group = self.optimizer.param_groups[0]
        return self.cfg.optim.lr * group["lr"] / group["initial_lr"]

    def resume(self) -> bool:
        checkpoint = state.latest(self.out)
        if checkpoint is None:
            return False
        if self.sharded:
            self.accelerator.load_state(str(checkpoint))
            self.scheduler.load_state_dict(state.load_plain(checkpoint / state.SCHEDULER_FILE))
            self.progress = state.read_progress(checkpoint)
        else:
            self.progress = state.load(checkpoint, self.model, self.optimizer, self.scheduler,
                                       self.accelerator.process_index)  # fmt: skip
        self.say(f"resumed from {checkpoint} at step {self.progress.step}")
        self._say_if_steps_changed()
        return True

    def _say_if_steps_changed(self) -> None:
        """The learning-rate schedule is rebuilt for the steps asked now: a finished run continued with more steps
        resumes mid-curve (a higher rate than where it stopped), which the user should know."""
        try:
            before = read_yaml_mapping(self.out / RUN_CONFIG, "training config").get("steps")
        except ConfigError:  # no config written yet, or not one this code wrote: nothing to compare
            return
        if isinstance(before, int) and before != self.cfg.steps:
            self.say(f"steps changed from {before:,} to {self.cfg.steps:,}: the learning rate follows the schedule of "
                     f"a {self.cfg.steps:,}-step run, {self.base_lr():.2e} at step {self.progress.step:,}")  # fmt: skip

    def run(self) -> Path:
        cfg, accelerator = self.cfg, self.accelerator
        self.out.mkdir(parents=True, exist_ok=True)
        if accelerator.is_main_process:
            (self.out / RUN_CONFIG).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            for sel in self.index.selections:
                tasks = ", ".join(f"{t} {n:,}" for t, n in sorted(sel.by_task.items()))
                self.say(f"{sel.records}: {sel.selected:,} records ({tasks}), images under {sel.root}")
        if cfg.cache_visual and self.cache is None:
            self.cache = self._build_cache()
        batches = self.order.batches_from(self.progress.epoch, self.progress.batch)
        bar = self._bar()
        log = metrics_log.open_log(self.out, self.progress.step) if accelerator.is_main_process else None
        board = self._tensorboard() if accelerator.is_main_process and cfg.tensorboard else None
        started, window = time.perf_counter(), {"samples": 0, "tokens": 0, "time": time.perf_counter()}
        while self.progress.step < cfg.steps:
            micro = [next(batches) for _ in range(cfg.grad_accum)]
            loss, box_loss, samples, tokens = self._step(micro)
            self.progress.epoch, self.progress.batch = self.order.after(*micro[-1][:2])
            self.progress.step += 1
            self.progress.samples += samples
            self.progress.tokens += tokens
            window["samples"] += samples
            window["tokens"] += tokens
            if self.progress.step % cfg.log_every == 0 or self.progress.step == cfg.steps:
                elapsed = time.perf_counter() - window["time"]
                metrics = {"step": self.progress.step, "loss": round(loss, 5), "lr": self.base_lr(),
                           "samples_per_s": round(window["samples"] / elapsed, 2),
                           "tokens_per_s": round(window["tokens"] / elapsed, 1), "epoch": self.progress.epoch,
                           "elapsed_s": round(time.perf_counter() - started, 2)}  # fmt: skip
                if box_loss is not None:
                    metrics["box_attention_loss"] = round(box_loss, 5)
                window = {"samples": 0, "tokens": 0, "time": time.perf_counter()}
                if log is not None:
                    log.write(json.dumps(metrics) + "\n")
                    log.flush()
                if board is not None:
                    for name in ("loss", "lr", "samples_per_s", "tokens_per_s"):
                        board.add_scalar(f"train/{name}", metrics[name], self.progress.step)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{metrics['lr']:.2e}", sps=metrics["samples_per_s"])
            if bar is not None:
                bar.update(1)
            if self.progress.step % cfg.save_every == 0 or self.progress.step == cfg.steps:
                self.save()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        if board is not None:
            board.close()
        if self.maker.skipped:
            self.say(f"skipped records: {dict(self.maker.skipped)}")
        if self.box_targets is not None:  # every process counts its own rows: summed (a collective, on all of them)
            counted = torch.tensor(self.box_targets.rows_left_out, device=accelerator.device)
            left_out = int(accelerator.reduce(counted, reduction="sum").item())
            if left_out:
                self.say(f"box attention: {left_out:,} records that answer with a box were left out of its loss "
                         "(not one image; they trained on the token loss)")  # fmt: skip
        final = self.out / "final"
        weights = accelerator.get_state_dict(self.wrapped)  # every process takes part: it gathers shards
        if accelerator.is_main_process:
            save_checkpoint(accelerator.unwrap_model(self.wrapped).eval(), final, weights)
            self.say(f"saved the trained model to {final}")
        accelerator.wait_for_everyone()
        return final

    def _step(self, micro) -> tuple[float, float | None, int, int]:
        """One optimizer step; returns the mean token loss, the box attention loss (None when off or when no
        record wrote a box), the records and the (non-padding) tokens seen."""
        accelerator, rank, size = self.accelerator, self.accelerator.process_index, self.cfg.batch_size
        batches = []
        for epoch, _, indices in micro:
            local = indices[rank * size : (rank + 1) * size]
            samples = [self.maker(*self.index.record(int(i)), epoch, int(i)) for i in local]
            samples = [s for s in samples if s is not None]
            if not samples:
                raise ValueError("every record of a micro-batch is longer than max_length; raise max_length")
            batches.append(collate_samples(samples, self.model.tokenizer.pad_token_id, self.cache))
        learned = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        total = accelerator.reduce(torch.tensor(learned, device=accelerator.device), reduction="sum").item()
        loss_total, box_losses = 0.0, []
        for number, batch in enumerate(batches):
            targets = self.box_targets(batch["labels"], batch["image_mask"]) if self.box_targets else None
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            labels = batch.pop("labels")
            sync = number == len(batches) - 1
            with nullcontext() if sync else accelerator.no_sync(self.wrapped), accelerator.autocast():
                output = self.wrapped(**batch, output_attentions=targets is not None)
                loss_sum = token_loss_sum(output.logits, labels)
                loss = loss_sum * accelerator.num_processes / max(total, 1)
                box_loss = None if targets is None else box_attention_loss(output.attentions, *targets,
                                                                           self.cfg.box_attention.heads)  # fmt: skip
                if box_loss is not None:
                    loss = loss + self.cfg.box_attention.weight * box_loss / len(batches)
                    box_losses.append(box_loss.item())
                accelerator.backward(loss)
            loss_total += loss_sum.item()
        if self.cfg.optim.clip:
            accelerator.clip_grad_norm_(self.wrapped.parameters(), self.cfg.optim.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seen = sum(int(b["attention_mask"].sum()) for b in batches)
        sums = accelerator.reduce(torch.tensor([loss_total, seen], device=accelerator.device), reduction="sum")
        samples = sum(len(b["input_ids"]) for b in batches) * accelerator.num_processes
        box_loss = sum(box_losses) / len(box_losses) if box_losses else None
        return sums[0].item() / max(total, 1), box_loss, samples, int(sums[1].item())

    def save(self) -> None:
        accelerator, rank = self.accelerator, self.accelerator.process_index
        partial = state.partial_path(self.out, self.progress.step)
        if self.sharded:
            accelerator.save_state(str(partial))
            if accelerator.is_main_process:
                torch.save(self.scheduler.state_dict(), partial / state.SCHEDULER_FILE)
                state.write_progress(partial, self.progress)
        elif accelerator.is_main_process:
            state.write_partial(self.out, self.model, self.optimizer, self.scheduler, self.progress)
        accelerator.wait_for_everyone()
        if not self.sharded:
            state.save_rng(partial, rank)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state.publish(partial, self.cfg.keep_checkpoints)
        accelerator.wait_for_everyone()

    def _build_cache(self) -> VisualCache:
        paths = []
        for index in range(len(self.index)):
            record, root = self.index.record(index)
            paths += [str(root / image) for image in record.images]
        return VisualCache(self.model, paths, progress=self.show_progress and self.accelerator.is_main_process)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError("tensorboard: true needs the tensorboard package: pip install tensorboard") from err
        return SummaryWriter(str(self.out / "tensorboard"))

    def _bar(self):
        if not (self.show_progress and self.accelerator.is_main_process):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.steps, initial=self.progress.step, desc="training", unit=" steps")

    def say(self, text: str) -> None:
        if self.accelerator.is_main_process:
            print(text, file=sys.stderr)


def run_phases(model, cfg: TrainConfig, accelerator, progress: bool) -> None:
    """The phases before instruction tuning, each run once (on the main process; a finished one is loaded from
    its folder) and its result given to every process: the tower as a classifier, then the box refiner, then the
    self-critical captions (only in a stage with steps 0)."""
    out = Path(cfg.out)
    if cfg.tower is not None:
        if accelerator.is_main_process and not load_pretrained_tower(model, out / "tower"):
            model.visual_encoder.requires_grad_(True)
            pretrain_tower(model, cfg.tower, out / "tower", cfg.seed, progress)
        accelerator.wait_for_everyone()
        load_pretrained_tower(model, out / "tower")
    if cfg.box_refiner is not None:
        if accelerator.is_main_process and not load_trained_refiner(model, out / "box-refiner"):
            train_box_refiner(model, cfg.box_refiner, out / "box-refiner", cfg.seed, progress)
        accelerator.wait_for_everyone()
        load_trained_refiner(model, out / "box-refiner")
    if cfg.self_critical is not None:
        if accelerator.is_main_process and not load_self_critical(model, out / "self-critical"):
            train_self_critical(model, cfg.self_critical, out / "self-critical", cfg.seed, progress)
        accelerator.wait_for_everyone()
        load_self_critical(model, out / "self-critical")


def phases_only(cfg: TrainConfig, progress: bool = True) -> Path:
    """A stage with steps 0: its phases change the model, the decoder does not learn; out/final is the result."""
    from accelerate import PartialState

    from skyeye.model.loading import load_model

    accelerator = PartialState(cpu=not torch.cuda.is_available())
    model = load_model(cfg.model, seed=cfg.seed, image_size=cfg.image_size)
    run_phases(model, cfg, accelerator, progress)
    final = Path(cfg.out) / "final"
    if accelerator.is_main_process:
        save_checkpoint(model.eval(), final)
        print(f"saved the model to {final}", file=sys.stderr)
    accelerator.wait_for_everyone()
    return final


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    if cfg.steps == 0:
        return phases_only(cfg, progress)
    trainer = Trainer(cfg, progress=progress)
    if resume and not trainer.resume():
        trainer.say(f"no checkpoint under {cfg.out}/checkpoints: starting from step 0")
    return trainer.run()


def train_stages(stages: list[TrainConfig], resume: bool = False, progress: bool = True) -> Path:
    """Trains the stages of a recipe in order; returns the last one's final model."""
    from accelerate import PartialState

    final = None
    for number, cfg in enumerate(stages, 1):
        if len(stages) > 1 and PartialState(cpu=not torch.cuda.is_available()).is_main_process:
            print(f"stage {number}/{len(stages)}: {cfg.model} -> {cfg.out}", file=sys.stderr)
        final = train(cfg, resume=resume, progress=progress)
    return final
