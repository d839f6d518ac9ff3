"""Backpropagation (through time): AdamW, schedules, clipping, early stopping, AMP."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Dataset
from ..metrics import flat_targets, predict
from ..models import SequenceModel
from ..utils import progress
from . import EpochCallback, FitResult, register_learner
from .checkpoint import Checkpoints


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
                 loss_fn: nn.Module, scaler: torch.amp.GradScaler) -> tuple[torch.Tensor, int, int]:
        """One batch: leave the gradients in ``.grad``; return (mean loss, correct, counted predictions)."""
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            logits, target = flat_targets(model(x, lengths), y)
            loss = loss_fn(logits.float(), target)
            reg = model.regularization_loss()  # e.g. the LSNN's firing-rate term
        scaler.scale(loss if reg is None else loss + reg).backward()
        return loss.detach(), int((logits.argmax(1) == target).sum()), len(target)

    def checkpoint_parts(self) -> dict[str, nn.Module | torch.Tensor]:
        """The learner's own state beyond the model and optimizer (e-prop's adaptive feedback)."""
        return {}

    def train_epoch(self, model: SequenceModel, batches: Iterable[tuple[torch.Tensor, ...]],
                    opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler, loss_fn: nn.Module,
                    train: TrainConfig, epoch: int, steps_per_epoch: int) -> tuple[float, float]:
        """One pass over the training batches; returns (mean loss, accuracy) over what counted."""
        model.train()
        total_loss, correct, count = 0.0, 0, 0
        for step, (x, lengths, y) in enumerate(batches):
            opt.zero_grad(set_to_none=True)
            loss, batch_correct, batch_count = self.backward(model, x, lengths, y, loss_fn, scaler)
            if train.clip_grad_norm:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), train.clip_grad_norm)
            scaler.step(opt)
            scaler.update()
            if sched is not None:  # warm restarts count in fractional epochs
                sched.step(epoch - 1 + (step + 1) / steps_per_epoch)
            total_loss += loss.item() * batch_count
            correct += batch_correct
            count += batch_count
        return total_loss / max(count, 1), correct / max(count, 1)

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
        """Train for ``train.epochs`` (fewer with early stopping); with ``checkpoint``, save the loop
        after every ``checkpoint.every`` epochs and first continue from ``checkpoint.state``."""
        fit_t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        model.to(device)
        opt = self.make_optimizer(model, train)
        steps_per_epoch = math.ceil(len(data.train) / train.batch_size)
        sched = None
        if train.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=train.restart_epochs)
        use_amp = train.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)

        result = FitResult()
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
            batches = progress(
                data.train.batches(train.batch_size, shuffle=True, generator=generator, device=device),
                total=steps_per_epoch, desc=f"epoch {epoch}/{train.epochs}", unit="batch",
            )
            train_loss, train_accuracy = self.train_epoch(model, batches, opt, sched, scaler, loss_fn, train,
                                                          epoch, steps_per_epoch)
            seconds = time.perf_counter() - t0
            val = predict(model, data.val, train.eval_batch_size, device)
            metrics = {
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "val_loss": val.loss(),
                "val_accuracy": val.accuracy,
                "lr": opt.param_groups[0]["lr"],
                "epoch_seconds": seconds,
            }
            result.history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            # Better = higher val accuracy; on a tie (small val sets) lower val loss.
            score = (val.accuracy, -metrics["val_loss"])
            if score > best:
                best, stale, result.best_epoch = score, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                stopped = train.patience is not None and stale >= train.patience
            if checkpoint is not None and checkpoint.due(epoch, last=stopped or epoch == train.epochs):
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
