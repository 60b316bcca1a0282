"""Training loop: AdamW + ExponentialLR, gradient accumulation, early stopping on validation MRE (mm).

Reproducibility and exact resume: the epoch's image order and augmentation
draws come from generators seeded with ``(seed, epoch)``, and the checkpoint
written atomically after every epoch holds the model, optimizer, scheduler,
early-stopping state and the objective's state (GroupDRO's q). A run stopped
after epoch e and resumed is therefore identical, on CPU bit for bit, to one
that never stopped.

The objective turns the unreduced (sample, keypoint) loss into the scalar to
minimise: :class:`MeanObjective` for plain training, or
:class:`reference_model.groupdro.GroupDROLoss` for fine-tuning.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager, nullcontext
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reference_model.augment import augment_batch
from reference_model.checkpoints import checkpoint_fits, load_checkpoint
from reference_model.config import TrainConfig
from reference_model.errors import InputError, TrainingDivergedError
from reference_model.heatmap import spatial_softmax_ce, target_indices
from reference_model.model import build_unet
from reference_model.predict import mean_radial_error_mm, predict_coords
from reference_model.preprocess import PreparedData

__all__ = ["MeanObjective", "TrainResult", "train_model", "select_device", "load_model", "save_atomic",
           "distributed_from_env", "is_main_process", "CHECKPOINT_LAST", "CHECKPOINT_BEST"]

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"
ERR_NAN_LOSS = (
    "training diverged: the loss became {value} at epoch {epoch}, optimizer step {step}; "
    "lower the learning rate (--lr) or check the images and landmarks"
)
ERR_RESUME_MISMATCH = (
    "cannot resume from {path}: it was trained with {key}={old!r} but this run has {new!r}; "
    "use the same settings or another --out folder"
)
ERR_NO_CHECKPOINT = "checkpoint {path}: not found; train a model first or check the path"
ERR_EMPTY_SPLIT = "the {which} set is empty; give more images or change the split fractions"
# Settings that a resumed run may change (a longer schedule, more patience, other logging).
_RESUMABLE_CHANGES = {"epochs", "patience", "num_workers", "finetune_epochs", "device"}


class MeanObjective:
    """Plain training: the mean loss over valid (sample, keypoint) pairs."""

    def __call__(self, loss: torch.Tensor, valid: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        valid = valid.float()
        return (loss * valid).sum() / valid.sum().clamp(min=1.0)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> str:
        return ""


@dataclass
class TrainResult:
    """What a training run produced."""

    model: torch.nn.Module  # with the best validation weights loaded
    best_val_mre_mm: float  # the best validation score: MRE in mm, or the given val_metric's value
    best_epoch: int
    epochs_run: int
    history: list = field(default_factory=list)
    out_dir: Path | None = None


def select_device(name: str = "auto") -> torch.device:
    """``auto``: the CUDA device when one is visible, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


@contextmanager
def distributed_from_env() -> Iterator[None]:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1); a no-op otherwise.

    NCCL on CUDA, gloo on CPU. Inside, :func:`train_model` wraps the model in
    DistributedDataParallel and gives each rank a disjoint share of every epoch.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or torch.distributed.is_initialized():
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend=backend)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def is_main_process() -> bool:
    """True outside DDP, and on rank 0 inside it."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
        or torch.distributed.get_rank() == 0


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_model(path: str | Path, *, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a model from a ``best.pt``/``last.pt`` checkpoint (``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_BEST
    if not path.is_file():
        raise InputError(ERR_NO_CHECKPOINT.format(path=path))
    state = load_checkpoint(path, required=("config", "model", "n_keypoints"))
    with checkpoint_fits(path):
        return _model_from_state(state, device)


def _model_from_state(state, device):
    config = TrainConfig(**{**state["config"], "decoder_channels": tuple(state["config"]["decoder_channels"]),
                            "encoder_weights": None})
    model = build_unet(encoder=config.encoder, n_keypoints=state["n_keypoints"], encoder_depth=config.encoder_depth,
                       decoder_channels=config.decoder_channels)
    model.load_state_dict(state["model"])
    return model.to(device), config


class _ImageDataset(torch.utils.data.Dataset):
    """uint8 images and model-space landmarks by index; cheap, so workers can prefetch."""

    def __init__(self, data: PreparedData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.image_ids)

    def __getitem__(self, index: int):
        return (torch.from_numpy(np.array(self.data.images[index])),
                torch.from_numpy(self.data.landmarks[index].astype(np.float32)), index)


def _epoch_order(n_images: int, seed: int, epoch: int, sampling_weights: np.ndarray | None) -> np.ndarray:
    rng = np.random.default_rng([seed, epoch])
    if sampling_weights is None:
        return rng.permutation(n_images)
    return rng.choice(n_images, size=n_images, replace=True, p=sampling_weights / sampling_weights.sum())


class _EpochSampler(torch.utils.data.Sampler):
    """This rank's share of the epoch's image order; call :meth:`set_epoch` before iterating.

    One DataLoader then serves every epoch, so ``persistent_workers`` keeps its
    workers alive instead of starting new ones each epoch. Every rank gets the
    same number of images (DDP needs equal step counts), a disjoint share.
    """

    def __init__(self, n_images: int, *, seed: int, sampling_weights: np.ndarray | None, rank: int, world: int):
        self.n_images, self.seed, self.sampling_weights = n_images, seed, sampling_weights
        self.rank, self.world, self.epoch = rank, world, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_images // self.world

    def __iter__(self):
        order = _epoch_order(self.n_images, self.seed, self.epoch, self.sampling_weights)
        return iter(order[: len(self) * self.world][self.rank::self.world].tolist())


def _check_resumable(saved: dict, config: TrainConfig, path: Path) -> None:
    current = config.to_dict()
    for key, old in saved.items():
        if key in _RESUMABLE_CHANGES:
            continue
        if current.get(key) != old:
            raise InputError(ERR_RESUME_MISMATCH.format(path=path, key=key, old=old, new=current.get(key)))


class Objective(Protocol):
    """What :func:`train_model` minimises: the unreduced (sample, keypoint) loss -> a scalar, with a saved state."""

    def __call__(self, loss: torch.Tensor, valid: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def summary(self) -> str: ...


ValMetric = Callable[[np.ndarray, PreparedData], float]


@dataclass
class _Run:
    """Everything one training run works with, built once by :func:`_build`."""

    model: torch.nn.Module  # the weights that are validated and saved
    step_model: torch.nn.Module  # what the training step calls: the model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ExponentialLR
    sampler: _EpochSampler
    loader: torch.utils.data.DataLoader
    device: torch.device
    memory_format: torch.memory_format
    distributed: bool
    rank: int
    n_keypoints: int
    image_size: int

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class _Progress:
    """Early-stopping state and history: saved in ``last.pt`` every epoch, restored on resume."""

    start_epoch: int = 1
    best_score: float = math.inf
    best_epoch: int = 0
    since_best: int = 0
    history: list = field(default_factory=list)
    stopped_early: bool = False

    def record(self, epoch: int, score: float, patience: int) -> bool:
        """Count one validated epoch; True when it is the best so far."""
        improved = score < self.best_score
        if improved:
            self.best_score, self.best_epoch, self.since_best = score, epoch, 0
        else:
            self.since_best += 1
        self.stopped_early = self.since_best >= patience
        return improved


@dataclass
class _EpochStats:
    train_loss: float
    loop_seconds: float
    images_seen: int
    data_wait: float


def _check_splits(train_data: PreparedData, val_data: PreparedData) -> None:
    for which, data in (("training", train_data), ("validation", val_data)):
        if len(data.image_ids) == 0:
            raise InputError(ERR_EMPTY_SPLIT.format(which=which))


def _build(train_data: PreparedData, config: TrainConfig, *, lr: float, init_state: dict | None,
           sampling_weights: np.ndarray | None) -> _Run:
    """Device, model (seeded initialisation), optimizer, scheduler, DDP/compile wrappers and the epoch loader."""
    device = select_device(config.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if (on_cuda and config.channels_last) else torch.contiguous_format

    n_keypoints = train_data.landmarks.shape[1]
    torch.manual_seed(config.seed)  # weight initialisation
    model = build_unet(encoder=config.encoder, n_keypoints=n_keypoints, encoder_depth=config.encoder_depth,
                       decoder_channels=config.decoder_channels, encoder_weights=config.encoder_weights,
                       bn_momentum=config.bn_momentum)
    if init_state is not None:
        with checkpoint_fits("given to fine-tune"):
            model.load_state_dict(init_state)
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay,
                                  fused=on_cuda or None)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    step_model = model
    if distributed:
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if on_cuda else None)
    if config.compile:
        step_model = torch.compile(step_model, dynamic=False)  # the short last batch gets its own static graph

    dataset = _ImageDataset(train_data)
    sampler = _EpochSampler(len(dataset), seed=config.seed, sampling_weights=sampling_weights, rank=rank, world=world)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=config.batch_size,
                                         num_workers=config.num_workers, pin_memory=on_cuda,
                                         persistent_workers=config.num_workers > 0)
    return _Run(model=model, step_model=step_model, optimizer=optimizer, scheduler=scheduler, sampler=sampler,
                loader=loader, device=device, memory_format=memory_format, distributed=distributed, rank=rank,
                n_keypoints=n_keypoints, image_size=train_data.images.shape[-1])


def _resume(run: _Run, objective: Objective, config: TrainConfig, last_path: Path, epochs: int) -> _Progress:
    """Restore model, optimizer, scheduler, objective and early-stopping state from ``last.pt``."""
    state = load_checkpoint(last_path, required=("config", "model", "optimizer", "scheduler", "objective", "epoch"))
    _check_resumable(state["config"], config, last_path)
    with checkpoint_fits(last_path):
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        objective.load_state_dict(state["objective"])
        progress = _Progress(start_epoch=state["epoch"] + 1, best_score=state["best_val_mre_mm"],
                             best_epoch=state["best_epoch"], since_best=state["epochs_since_best"],
                             history=list(state["history"]))
    if state.get("stopped_early"):
        progress.start_epoch = epochs + 1
    return progress


def _train_epoch(run: _Run, objective: Objective, config: TrainConfig, epoch: int, display: _Display) -> _EpochStats:
    """One pass over this rank's share of the epoch: augmentation, accumulated steps, NaN check."""
    epoch_start = time.perf_counter()
    run.sampler.set_epoch(epoch)
    generator = torch.Generator(device=run.device).manual_seed(config.seed * 1_000_003 + epoch)
    n_batches = len(run.loader)
    if config.max_steps_per_epoch is not None:
        n_batches = min(n_batches, config.max_steps_per_epoch * config.grad_accumulation)
    display.start_epoch(epoch, n_batches)
    run.model.train()
    run.optimizer.zero_grad(set_to_none=True)
    running, running_count, data_wait, step = torch.zeros((), device=run.device), 0, 0.0, 0
    images_seen = 0
    fetch_start = time.perf_counter()
    for batch_number, (images, coords, index) in enumerate(run.loader, start=1):
        if batch_number > n_batches:
            break
        data_wait += time.perf_counter() - fetch_start
        images_seen += len(index)
        images = images.to(run.device, non_blocking=True)[:, None].float().div_(255.0)
        coords = coords.to(run.device, non_blocking=True)
        if config.augment:
            images, coords = augment_batch(
                images, coords, generator=generator, rotation_deg=config.aug_rotation_deg,
                scale=config.aug_scale, translation=config.aug_translation, intensity=config.aug_intensity)
        images = images.contiguous(memory_format=run.memory_format)
        target, valid = target_indices(coords, run.image_size)
        steps_now = batch_number % config.grad_accumulation == 0 or batch_number == n_batches
        # Under DDP, gradients are all-reduced only on the micro-batch that steps.
        sync = nullcontext() if (steps_now or not run.distributed) else run.step_model.no_sync()
        with sync:
            with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16,
                                enabled=run.on_cuda and config.bf16):
                logits = run.step_model(images)
            per_landmark = spatial_softmax_ce(logits, target, valid)
            loss = objective(per_landmark, valid, index.to(run.device, non_blocking=True))
            (loss / config.grad_accumulation).backward()
        running += loss.detach()
        running_count += 1
        if steps_now:
            step += 1
            value = (running / running_count).item()  # one host sync per optimizer step
            if not math.isfinite(value):
                raise TrainingDivergedError(ERR_NAN_LOSS.format(value=value, epoch=epoch, step=step))
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            display.advance(value, batch_number)
        fetch_start = time.perf_counter()
    run.scheduler.step()
    train_loss = (running / max(running_count, 1)).item()  # waits for the device: loop time is real
    return _EpochStats(train_loss=train_loss, loop_seconds=time.perf_counter() - epoch_start,
                       images_seen=images_seen, data_wait=data_wait)


def _validate(run: _Run, val_data: PreparedData, config: TrainConfig,
              val_metric: ValMetric | None) -> tuple[float, float]:
    """Validation MRE in mm, and the score to minimise (the MRE, or ``val_metric``'s value)."""
    val_pred = predict_coords(run.model, val_data, device=run.device, batch_size=config.batch_size,
                              subpixel=config.subpixel, bf16=config.bf16,
                              channels_last=run.memory_format == torch.channels_last)
    val_mre = mean_radial_error_mm(val_pred, val_data)
    val_score = val_mre if val_metric is None else float(val_metric(val_pred, val_data))
    return val_mre, val_score


def _checkpoint(run: _Run, objective: Objective, config: TrainConfig, progress: _Progress, *, epoch: int,
                improved: bool, val_mre: float, out_dir: Path) -> None:
    """Write ``best.pt`` when the epoch improved and ``last.pt`` always (rank 0 only; atomic)."""
    if run.rank != 0:
        return
    model_state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    common = {"config": config.to_dict(), "n_keypoints": run.n_keypoints}
    if improved:
        save_atomic({"model": model_state, "epoch": epoch, "val_mre_mm": val_mre, **common}, out_dir / CHECKPOINT_BEST)
    save_atomic({"model": model_state, "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "objective": objective.state_dict(),
                 "epoch": epoch, "best_val_mre_mm": progress.best_score, "best_epoch": progress.best_epoch,
                 "epochs_since_best": progress.since_best, "history": progress.history,
                 "stopped_early": progress.stopped_early, **common}, out_dir / CHECKPOINT_LAST)


def train_model(*, train_data: PreparedData, val_data: PreparedData, config: TrainConfig,
                out_dir: str | Path, resume: bool = False, init_state: dict | None = None,
                objective: Objective | None = None, sampling_weights: np.ndarray | None = None,
                epochs: int | None = None, lr: float | None = None, val_metric: ValMetric | None = None,
                progress: bool = True) -> TrainResult:
    """Train (or fine-tune) a U-Net and keep the weights with the best validation MRE.

    The steps: build the model, optimizer, scheduler and loader; resume from
    ``last.pt`` if asked; then per epoch train, validate, and checkpoint,
    until ``epochs`` or early stopping (``config.patience`` epochs without
    improvement). The best weights are loaded back at the end.

    Parameters
    ----------
    train_data, val_data : PreparedData
    config : TrainConfig
    out_dir : path
        Receives ``last.pt`` (full state, every epoch) and ``best.pt`` (best weights).
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists.
    init_state : dict, optional
        Model state dict to start from (fine-tuning).
    objective : callable, optional
        ``objective(loss[B, K], valid[B, K], image_index[B]) -> scalar``, with
        ``state_dict``/``load_state_dict``/``summary``; default :class:`MeanObjective`.
    sampling_weights : ndarray, optional
        Per-training-image draw weights (group-balanced sampling); default: a permutation.
    epochs, lr : optional
        Override ``config.epochs`` / ``config.lr`` (fine-tuning uses its own).
    val_metric : callable, optional
        ``val_metric(pred_original, val_data) -> float`` to minimise for early
        stopping and model selection; default: validation MRE in mm.
    progress : bool
        Show a rich progress display.

    Returns
    -------
    TrainResult
    """
    _check_splits(train_data, val_data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = config.epochs if epochs is None else epochs
    lr = config.lr if lr is None else lr
    objective = objective or MeanObjective()

    run = _build(train_data, config, lr=lr, init_state=init_state, sampling_weights=sampling_weights)
    last_path, best_path = out_dir / CHECKPOINT_LAST, out_dir / CHECKPOINT_BEST
    state = _resume(run, objective, config, last_path, epochs) if resume and last_path.is_file() else _Progress()

    display = _Display(enabled=progress and run.rank == 0, epochs=epochs, start_epoch=state.start_epoch)
    with display:
        for epoch in range(state.start_epoch, epochs + 1):
            epoch_start = time.perf_counter()
            stats = _train_epoch(run, objective, config, epoch, display)
            val_mre, val_score = _validate(run, val_data, config, val_metric)
            improved = state.record(epoch, val_score, config.patience)
            state.history.append({
                "epoch": epoch, "train_loss": stats.train_loss, "val_mre_mm": val_mre, "val_score": val_score,
                "lr": float(run.scheduler.get_last_lr()[0]), "seconds": time.perf_counter() - epoch_start,
                "train_seconds": stats.loop_seconds, "images_seen": stats.images_seen,
                "data_wait_share": stats.data_wait / stats.loop_seconds if stats.loop_seconds > 0 else 0.0,
                "objective": objective.summary()})
            display.end_epoch(stats.train_loss, val_mre, objective.summary())
            _checkpoint(run, objective, config, state, epoch=epoch, improved=improved, val_mre=val_mre,
                        out_dir=out_dir)
            if state.stopped_early:
                break

    if best_path.is_file():
        best_state = load_checkpoint(best_path, required=("model",), config_keys=())
        with checkpoint_fits(best_path):
            run.model.load_state_dict(best_state["model"])
    return TrainResult(model=run.model, best_val_mre_mm=state.best_score, best_epoch=state.best_epoch,
                       epochs_run=len(state.history), history=state.history, out_dir=out_dir)


class _Display:
    """rich progress: one bar over epochs, one over the epoch's batches, with loss and val MRE."""

    def __init__(self, *, enabled: bool, epochs: int, start_epoch: int):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(), transient=False)
        self.epoch_task = self.progress.add_task("epochs", total=epochs, completed=start_epoch - 1, status="")
        self.batch_task = None

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        if not self.enabled:
            return
        if self.batch_task is not None:
            self.progress.remove_task(self.batch_task)
        self.batch_task = self.progress.add_task(f"epoch {epoch}", total=n_batches, status="")

    def advance(self, loss: float, completed: int) -> None:
        if self.enabled:
            self.progress.update(self.batch_task, completed=completed, status=f"loss {loss:.3f}")

    def end_epoch(self, loss: float, val_mre: float, objective_summary: str) -> None:
        if self.enabled:
            status = f"loss {loss:.3f}  val MRE {val_mre:.2f} mm"
            if objective_summary:
                status += f"  {objective_summary}"
            self.progress.update(self.epoch_task, advance=1, status=status)
