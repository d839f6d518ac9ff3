"""Backpropagation (through time): AdamW, schedules, clipping, early stopping, AMP."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..config import TrainConfig
from ..data import Dataset, Sequences
from ..data.heads import HeadsLoss
from ..metrics import flat_targets, predict
from ..models import SequenceModel
from ..utils import progress
from . import EpochCallback, FitResult, register_learner
from .checkpoint import Checkpoints


def epoch_batches(seqs: Sequences, batch_size: int, generator: torch.Generator, device: torch.device
                  ) -> tuple[Iterable[tuple[torch.Tensor, ...]], int]:
    """(this rank's shuffled batches of one epoch, how many). Under torchrun every rank draws the same
    order from the same generator and takes its strided shard, padded so all ranks step in lock-step."""
    if not distributed.active():
        batches = seqs.batches(batch_size, shuffle=True, generator=generator, device=device)
        return batches, math.ceil(len(seqs) / batch_size)
    mine = distributed.shard(torch.randperm(len(seqs), generator=generator).numpy(), pad=True)
    return seqs.subset(mine).batches(batch_size, device=device), math.ceil(len(mine) / batch_size)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch on each rank (every rank steps alike: see :func:`epoch_batches`)."""
    return math.ceil(math.ceil(n_train / distributed.world_size()) / batch_size)


def lr_schedule(opt: torch.optim.Optimizer, train: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate after each optimizer step: a linear warm-up over ``train.warmup_steps``, then
    constant or cosine (to zero at the end, or restarted every ``train.restart_epochs``); ``steps`` per epoch."""
    period = steps * (train.restart_epochs or train.epochs)

    def factor(step: int) -> float:  # the factor of the lr used for optimizer step `step` (0-based)
        warm = min(1.0, (step + 1) / train.warmup_steps) if train.warmup_steps else 1.0
        if train.schedule == "constant":
            return warm
        done = step % period if train.restart_epochs else min(step, period)
        return warm * 0.5 * (1 + math.cos(math.pi * done / period))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@register_learner("gradient")
class GradientLearner:
    """Gradient descent on every trainable parameter (BPTT for recurrent models).

    ``optimizer``: adamw or sgd (momentum 0.9). ``betas``: AdamW's (β1, β2).
    """

    def __init__(self, optimizer: str = "adamw", betas: tuple[float, float] = (0.9, 0.999)) -> None:
        if optimizer not in ("adamw", "sgd"):
            from ..errors import EchoesError

            raise EchoesError(f"learner.optimizer must be adamw or sgd, got '{optimizer}'")
        self.optimizer = optimizer
        self.betas = tuple(betas)

    def make_optimizer(self, model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=train.lr, momentum=0.9, weight_decay=train.weight_decay)
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, betas=self.betas)

    def backward(self, model: SequenceModel, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
                 loss_fn: HeadsLoss, scaler: torch.amp.GradScaler) -> tuple[torch.Tensor, int, int]:
        """One batch (``model`` may be DDP-wrapped): leave the gradients in ``.grad``; return
        (mean loss, correct, counted predictions)."""
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            logits, target = flat_targets(model(x, lengths), y)
            loss = loss_fn(logits.float(), target)
            # e.g. the LSNN's firing-rate term (under DDP: the wrapped model's)
            reg = getattr(model, "module", model).regularization_loss()
        scaler.scale(loss if reg is None else loss + reg).backward()
        right = loss_fn.heads.predicted(logits.detach()) == target  # several heads: all of them right
        return loss.detach(), int(right.sum()), len(target)

    def checkpoint_parts(self) -> dict[str, nn.Module | torch.Tensor]:
        """The learner's own state beyond the model and optimizer (e-prop's adaptive feedback)."""
        return {}

    def train_epoch(self, model: SequenceModel, batches: Iterable[tuple[torch.Tensor, ...]],
                    opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler, loss_fn: HeadsLoss,
                    train: TrainConfig) -> tuple[float, float]:
        """One pass over the training batches; returns (mean loss, accuracy) over what counted."""
        model.train()
        total_loss, correct, count = 0.0, 0, 0
        for x, lengths, y in batches:
            opt.zero_grad(set_to_none=True)
            loss, batch_correct, batch_count = self.backward(model, x, lengths, y, loss_fn, scaler)
            if train.clip_grad_norm:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), train.clip_grad_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            total_loss += loss.item() * batch_count
            correct += batch_correct
            count += batch_count
        sums = distributed.all_reduce_sum(torch.tensor([total_loss, correct, count], dtype=torch.float64,
                                                       device=next(model.parameters()).device)).tolist()
        return sums[0] / max(sums[2], 1), sums[1] / max(sums[2], 1)

    @staticmethod
    def validate(model: SequenceModel, data: Dataset, train: TrainConfig, device: torch.device
                 ) -> tuple[float, float]:
        """(val accuracy, val loss), computed on rank 0 and broadcast: every rank decides early stopping alike."""
        out = torch.zeros(2, dtype=torch.float64, device=device)
        if distributed.is_main():
            val = predict(model, data.val, train.eval_batch_size, device, data.heads)
            out += torch.tensor([val.accuracy, val.loss()], dtype=torch.float64, device=device)
        return tuple(distributed.broadcast(out).tolist())

    def fit(
        self,
        model: SequenceModel,
        data: Dataset,
        train: TrainConfig,
        *,
        device: torch.device,
        seed: int,
        on_epoch: EpochCallback | None = None,
        checkpoint: Checkpoints | None = None,
    ) -> FitResult:
        """Train for ``train.epochs`` (fewer with early stopping; ``auto`` settings resolved for this
        training set, see ``FitResult.extra``); with ``checkpoint``, save the loop after every
        ``checkpoint.every`` epochs and first continue from ``checkpoint.state``."""
        fit_t0 = time.perf_counter()
        train = train.resolved(len(data.train), len(data.val), distributed.world_size(), model.default_lr)
        if checkpoint is not None:
            checkpoint.every = train.checkpoint_every
        generator = torch.Generator().manual_seed(seed)
        model.to(device)
        opt = self.make_optimizer(model, train)
        # Under torchrun: gradients averaged over the ranks in backward; rank 0 validates and checkpoints.
        net = model if not distributed.active() else DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
        sched = lr_schedule(opt, train, steps_per_epoch(len(data.train), train.batch_size))
        use_amp = train.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        loss_fn = data.heads.criterion(train.head_weights, train.label_smoothing)  # Σ heads' cross-entropies

        result = FitResult(extra={"planned_epochs": train.epochs, "batch_size": train.batch_size,
                                  "patience": train.patience or 0, "learning_rate": train.lr})
        best, best_state, stale, start, stopped = (-1.0, 0.0), None, 0, 1, False
        parts = {"model": model, "optimizer": opt, "scheduler": sched, "scaler": scaler, **self.checkpoint_parts()}
        loop = checkpoint.restore(parts, generator) if checkpoint is not None else None
        if loop is not None:
            result.history, result.best_epoch = loop["history"], loop["best_epoch"]
            best, best_state, stale, stopped = tuple(loop["best"]), loop["best_state"], loop["stale"], loop["stopped"]
            start = train.epochs + 1 if stopped else loop["epoch"] + 1
            result.resumed_from, result.seconds_before_resume = loop["epoch"], loop["seconds"]
        for epoch in range(start, train.epochs + 1):
            t0 = time.perf_counter()
            batches, steps = epoch_batches(data.train, train.batch_size, generator, device)
            batches = progress(batches, total=steps, desc=f"epoch {epoch}/{train.epochs}", unit="batch")
            train_loss, train_accuracy = self.train_epoch(net, batches, opt, sched, scaler, loss_fn, train)
            seconds = time.perf_counter() - t0
            val_accuracy, val_loss = self.validate(model, data, train, device)
            metrics = {
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "lr": opt.param_groups[0]["lr"],
                "epoch_seconds": seconds,
            }
            result.history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            # Better = higher val accuracy; on a tie (small val sets) lower val loss.
            score = (val_accuracy, -val_loss)
            if score > best:
                best, stale, result.best_epoch = score, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                stopped = train.patience is not None and stale >= train.patience
            last = stopped or epoch == train.epochs
            if checkpoint is not None and distributed.is_main() and checkpoint.due(epoch, last=last):
                checkpoint.save(epoch, parts, generator, {
                    "history": result.history, "best_epoch": result.best_epoch, "best": best,
                    "best_state": best_state, "stale": stale, "stopped": stopped,
                    "seconds": result.seconds_before_resume + time.perf_counter() - fit_t0,
                })
            if stopped:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        return result
