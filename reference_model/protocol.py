"""The paper's protocol: train every balanced hold-out, predict its test set, write audit-ready files.

Output folder::

    splits.json                    the hold-outs' image ids
    meta.csv                       image_id + attributes, for ``fairlandmark audit``
    predictions.csv                vanilla models, one ``run`` per hold-out
    predictions_mitigated.csv      GroupDRO fine-tuned models (with ``mitigate``)
    summary.json                   per hold-out validation/test MRE and epochs
    holdout_XX/{vanilla,mitigated}/{best.pt,last.pt,test_predictions.csv}

A hold-out whose ``test_predictions.csv`` exists is skipped on ``resume``, so
a long study continues where it stopped. With several CUDA devices visible
(or an explicit ``devices`` list), hold-outs run side by side, one process per
device, each taking the next hold-out when it finishes one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from reference_model.config import TrainConfig
from reference_model.datasets import LandmarkData
from reference_model.errors import InputError
from reference_model.holdouts import Holdout, balanced_holdouts
from reference_model.predict import predict_coords, predictions_frame, write_csv_atomic
from reference_model.preprocess import prepare

__all__ = ["run_holdouts", "run_one_holdout", "check_devices", "PREDICTIONS_FILE", "MITIGATED_FILE", "META_FILE"]

PREDICTIONS_FILE = "predictions.csv"
MITIGATED_FILE = "predictions_mitigated.csv"
META_FILE = "meta.csv"
_TEST_PREDICTIONS = "test_predictions.csv"
ERR_DEVICE = "device {name!r}: {reason}; use e.g. cuda:0,cuda:1 (one entry per process)"


def _write_json_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def run_one_holdout(*, data: LandmarkData, holdout: Holdout, attributes: list[str], config: TrainConfig,
                    out_dir: Path, cache_dir: Path, mitigate: bool, resume: bool, progress: bool) -> dict:
    """Train (and optionally fine-tune) one hold-out and predict its test set.

    Returns a summary dict with the two prediction tables under
    ``"vanilla"`` and ``"mitigated"`` (None without ``mitigate``).
    """
    from reference_model.finetune import finetune_groupdro
    from reference_model.train import select_device, train_model

    prepared = prepare(data, size=config.image_size, cache_dir=cache_dir)
    meta = data.meta.set_index("image_id")
    parts = {name: prepared.index_of(ids) for name, ids in
             (("train", holdout.train_ids), ("val", holdout.val_ids), ("test", holdout.test_ids))}
    train, val, test = (prepared.subset(parts[n]) for n in ("train", "val", "test"))
    holdout_dir = Path(out_dir) / f"holdout_{holdout.index:02d}"
    summary = {"holdout": holdout.index, "n_train": len(train.image_ids), "n_val": len(val.image_ids),
               "n_test": len(test.image_ids)}
    device = select_device(config.device)

    def predict_test(model, folder: Path) -> pd.DataFrame:
        frame = predictions_frame(holdout.index, test, predict_coords(
            model, test, device=device, batch_size=config.batch_size, subpixel=config.subpixel, bf16=config.bf16))
        write_csv_atomic(frame, folder / _TEST_PREDICTIONS)
        return frame

    def read_done(folder: Path):
        path = folder / _TEST_PREDICTIONS
        return pd.read_csv(path, dtype={"image_id": str}) if resume and path.is_file() else None

    vanilla_dir = holdout_dir / "vanilla"
    vanilla = read_done(vanilla_dir)
    if vanilla is None:
        result = train_model(train_data=train, val_data=val, config=config, out_dir=vanilla_dir, resume=resume,
                             progress=progress)
        vanilla = predict_test(result.model, vanilla_dir)
        summary.update(val_mre_mm=result.best_val_mre_mm, best_epoch=result.best_epoch, epochs=result.epochs_run)
    summary["test_mre_mm"] = _frame_mre(vanilla)
    mitigated = None
    if mitigate:
        mitigated_dir = holdout_dir / "mitigated"
        mitigated = read_done(mitigated_dir)
        if mitigated is None:
            result, objective = finetune_groupdro(
                checkpoint=vanilla_dir, train_data=train, train_meta=meta.loc[list(train.image_ids)].reset_index(),
                val_data=val, val_meta=meta.loc[list(val.image_ids)].reset_index(), attributes=attributes,
                config=config, out_dir=mitigated_dir, resume=resume, progress=progress)
            mitigated = predict_test(result.model, mitigated_dir)
            summary["top_q"] = objective.top_groups(5)
        summary["mitigated_test_mre_mm"] = _frame_mre(mitigated)
    return {**summary, "vanilla": vanilla, "mitigated": mitigated}


def _frame_mre(frame: pd.DataFrame) -> float:
    distance = np.hypot(frame["pred_x"] - frame["true_x"], frame["pred_y"] - frame["true_y"])
    spacing = frame["spacing_mm"].fillna(1.0) if "spacing_mm" in frame else 1.0
    return float(np.mean(distance * spacing))


_WORKER_DEVICE = None


def _claim_device(queue, cpu_threads: int) -> None:
    """Pool initializer: this worker process takes one device for all the hold-outs it runs."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = queue.get()
    if _WORKER_DEVICE.startswith("cpu"):
        import torch

        torch.set_num_threads(cpu_threads)  # CPU workers share the cores rather than oversubscribe them


def _run_in_worker(kwargs: dict) -> dict:
    kwargs["config"] = kwargs["config"].replace(device=_WORKER_DEVICE)
    return run_one_holdout(**kwargs)


def check_devices(devices: Sequence[str]) -> list[str]:
    """Validate a list of torch device names (``cuda:0``, ``cpu``); one-line InputError when unusable."""
    import torch

    checked = []
    for name in devices:
        name = str(name).strip()
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise InputError(ERR_DEVICE.format(name=name, reason="not a torch device name")) from None
        if device.type == "cuda":
            count = _visible_gpus()
            if device.index is None:
                raise InputError(ERR_DEVICE.format(name=name, reason="give the GPU's index"))
            if device.index >= count:
                raise InputError(ERR_DEVICE.format(name=name, reason=f"{count} CUDA device(s) visible"))
        elif device.type != "cpu":
            raise InputError(ERR_DEVICE.format(name=name, reason="only cpu and cuda devices are supported"))
        checked.append(str(device))
    return checked


def run_holdouts(data: LandmarkData, *, attributes: list[str], config: TrainConfig, out_dir: str | Path,
                 n_splits: int = 10, test_fraction: float = 0.2, val_fraction: float = 0.1,
                 mitigate: bool = False, resume: bool = False, cache_dir: str | Path | None = None,
                 devices: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Run the whole hold-out protocol and write the files listed in the module docstring.

    Parameters
    ----------
    devices : list of str, optional
        Run hold-outs side by side, one worker process per entry (for
        example ``["cuda:0", "cuda:1"]``). Default: one per visible GPU when
        ``config.device`` is ``auto`` and more than one is visible, else all
        in this process on ``config.device``. The results do not depend on
        how hold-outs are spread: each one's seeds are its own.

    Returns the summary (also written to ``summary.json``) with the paths of
    the predictions files.
    """
    if devices is None:
        n_gpus = _visible_gpus() if config.device == "auto" else 0
        devices = [f"cuda:{gpu}" for gpu in range(n_gpus)] if n_gpus > 1 else []
    devices = check_devices(devices)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else out_dir / "cache"
    prepare(data, size=config.image_size, cache_dir=cache_dir, progress=progress)  # fill the cache once
    holdouts = balanced_holdouts(data.meta, attributes, n_splits=n_splits, test_fraction=test_fraction,
                                 val_fraction=val_fraction, seed=config.seed)
    _write_json_atomic([h.to_dict() for h in holdouts], out_dir / "splits.json")
    write_csv_atomic(data.meta, out_dir / META_FILE)
    jobs = [dict(data=data, holdout=h, attributes=attributes, config=config, out_dir=out_dir, cache_dir=cache_dir,
                 mitigate=mitigate, resume=resume, progress=progress) for h in holdouts]
    if len(devices) > 1 and len(jobs) > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        cpu_workers = sum(d.startswith("cpu") for d in devices)
        cpu_threads = max(1, (os.cpu_count() or 1) // max(cpu_workers, 1))
        with ProcessPoolExecutor(max_workers=len(devices), mp_context=context, initializer=_claim_device,
                                 initargs=(queue, cpu_threads)) as pool:
            results = list(pool.map(_run_in_worker, [{**job, "progress": False} for job in jobs]))
    else:
        if len(devices) == 1:
            jobs = [{**job, "config": config.replace(device=devices[0])} for job in jobs]
        results = [run_one_holdout(**job) for job in jobs]
    files = {"predictions": str(out_dir / PREDICTIONS_FILE), "meta": str(out_dir / META_FILE)}
    write_csv_atomic(pd.concat([r.pop("vanilla") for r in results], ignore_index=True), files["predictions"])
    mitigated = [r.pop("mitigated") for r in results]
    if mitigate:
        files["predictions_mitigated"] = str(out_dir / MITIGATED_FILE)
        write_csv_atomic(pd.concat(mitigated, ignore_index=True), files["predictions_mitigated"])
    summary = {"files": files, "config": config.to_dict(), "attributes": attributes, "holdouts": results}
    _write_json_atomic(summary, out_dir / "summary.json")
    return summary


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
