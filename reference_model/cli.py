"""``fairlandmark-train`` / ``python -m reference_model``: synth, train, predict, holdouts, finetune, control.

Bad input ends with a one-line ``error: ...`` on stderr and exit code 2; a
diverged training run with exit code 1. Options are resolved as: the paper's
defaults, then ``--quick`` (a tiny CPU preset), then ``--config FILE``, then
the flags given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reference_model.errors import InputError, TrainingDivergedError

__all__ = ["main", "build_parser", "QUICK_PRESET"]

ERR_NO_TORCH = ("the reference model needs the [train] extra (torch, segmentation-models-pytorch); "
                "install it with: pip install 'fairlandmark[train]'")
ERR_DATA_FORMAT = "--format {fmt} needs {what}"

# A tiny configuration for a CPU: trains a 64x64 synthetic study in about a minute.
QUICK_PRESET = dict(encoder="tu-mobilenetv3_small_050", decoder_channels=(32, 16, 16, 8, 8), image_size=64,
                    batch_size=8, grad_accumulation=1, epochs=20, lr=1e-2, lr_gamma=0.95, bn_momentum=0.5,
                    patience=8, finetune_epochs=6, finetune_lr=1e-3, dro_step_size=0.05)
QUICK_N_SPLITS = 3

_CONFIG_FLAGS = {  # flag dest -> (TrainConfig field, type, help)
    "encoder": (str, "smp encoder (default densenet121; resnet50, vgg19, resnet18, ...)"),
    "encoder_weights": (str, "local state-dict file of ImageNet encoder weights (nothing is downloaded)"),
    "encoder_depth": (int, "encoder stages (default 5)"),
    "bn_momentum": (float, "BatchNorm running-statistics momentum (default: PyTorch's 0.1)"),
    "image_size": (int, "side of the padded, resized input (default 512)"),
    "batch_size": (int, "images per batch (default 8)"),
    "grad_accumulation": (int, "batches per optimizer step (default 8)"),
    "epochs": (int, "maximum epochs (default 200)"),
    "lr": (float, "AdamW learning rate (default 1e-3)"),
    "weight_decay": (float, "AdamW weight decay (default 1e-2)"),
    "lr_gamma": (float, "ExponentialLR factor per epoch (default 0.99)"),
    "patience": (int, "epochs without validation improvement before stopping (default 20)"),
    "seed": (int, "random seed: same seed, same run (default 0)"),
    "device": (str, "auto (cuda if available, else cpu), cpu, cuda, cuda:1 ..."),
    "num_workers": (int, "data-loader worker processes (default 0)"),
    "max_steps_per_epoch": (int, "cap on optimizer steps per epoch (quick runs)"),
    "dro_grouping": (str, "GroupDRO groups: keypoint_group (default), group or keypoint"),
    "dro_step_size": (float, "GroupDRO eta (default 0.01)"),
    "dro_adjustment": (float, "GroupDRO generalisation adjustment C, in C/sqrt(n_g) (default 0)"),
    "finetune_epochs": (int, "GroupDRO fine-tuning epochs (default 20)"),
    "finetune_lr": (float, "GroupDRO fine-tuning learning rate (default 1e-4)"),
}


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--format", default="generic", choices=["generic", "dha", "isbi2015", "cephadoadu"],
                       help="dataset layout (default generic: DIR/images, DIR/landmarks.csv, DIR/meta.csv)")
    group.add_argument("--data", type=Path, help="dataset folder (the output of `synth` is a generic one)")
    group.add_argument("--images", type=Path, help="image folder (overrides the layout's)")
    group.add_argument("--landmarks", type=Path, help="landmark file (generic long CSV, or the DHA all.csv)")
    group.add_argument("--meta", type=Path, help="meta CSV: image_id plus one column per attribute")
    group.add_argument("--spacing-mm", type=float, help="mm per pixel when the files do not say")
    group.add_argument("--annotator", default="mean", choices=["mean", "senior", "junior"],
                       help="ISBI 2015 annotation (default: mean of the two doctors)")
    group.add_argument("--split", help="CephAdoAdu split name in final_splits.json (default: all)")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (defaults: the paper's)")
    group.add_argument("--config", type=Path, help="TOML or JSON file of training options")
    group.add_argument("--quick", action="store_true",
                       help="tiny CPU preset: mobilenetv3-small U-Net, 64x64, 20 epochs, batch 8 without accumulation")
    for dest, (kind, text) in _CONFIG_FLAGS.items():
        group.add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind, help=text)
    group.add_argument("--decoder-channels", type=lambda s: tuple(int(v) for v in s.split(",")),
                       help="comma-separated decoder widths, one per encoder stage")
    group.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                       help="turn augmentation off")
    group.add_argument("--subpixel", action="store_const", const=True, help="sub-pixel refinement of the argmax")
    group.add_argument("--no-bf16", dest="bf16", action="store_const", const=False, help="no bf16 autocast on GPU")
    group.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    group.add_argument("--dro-balanced-sampling", action="store_const", const=True,
                       help="draw training images group-balanced during GroupDRO fine-tuning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairlandmark-train",
        description="Reference U-Net landmark model: synthetic data, training, prediction, balanced hold-outs, "
                    "GroupDRO fine-tuning and the image-classifier control. Docs: docs/reference_model.md")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic dataset with a planted group effect")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--n-images", type=int, default=60)
    synth.add_argument("--size", type=int, default=64, help="image height in pixels (width is 85%%)")
    synth.add_argument("--n-keypoints", type=int, default=5, help="1..8")
    synth.add_argument("--female-fraction", type=float, default=0.5)
    synth.add_argument("--effect-group", default="F", help="sex whose keypoint is made harder (default F)")
    synth.add_argument("--effect-keypoint", type=int, default=3, help="1-based keypoint made harder (default 3)")
    synth.add_argument("--effect-contrast", type=float, default=0.3,
                       help="relative contrast of that keypoint's feature in that group (1 = no effect)")
    synth.add_argument("--effect-jitter", type=float, default=3.0, help="extra anatomical variation, pixels")
    synth.add_argument("--spacing-mm", type=float, default=0.5)
    synth.add_argument("--seed", type=int, default=0)

    train = commands.add_parser("train", help="train one model (stratified validation split)")
    _add_data_args(train)
    _add_config_args(train)
    train.add_argument("--out", type=Path, required=True, help="folder for best.pt, last.pt, config.json")
    train.add_argument("--attribute", action="append", default=[], help="stratify the validation split on it")
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--test-ids", type=Path, help="file of image ids (one per line) kept out and predicted")
    train.add_argument("--resume", action="store_true", help="continue from --out/last.pt")

    predict = commands.add_parser("predict", help="write long-format predictions for fairlandmark audit")
    _add_data_args(predict)
    predict.add_argument("--checkpoint", type=Path, required=True, help="best.pt or its folder")
    predict.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    predict.add_argument("--run", default="0", help="value of the run column (default 0)")
    predict.add_argument("--subpixel", action="store_true")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--batch-size", type=int, default=8)

    holdouts = commands.add_parser("holdouts", help="the paper's protocol: N balanced hold-outs")
    _add_data_args(holdouts)
    _add_config_args(holdouts)
    holdouts.add_argument("--attribute", action="append", required=True, help="demographic attribute (repeatable)")
    holdouts.add_argument("--out", type=Path, required=True)
    holdouts.add_argument("--n-splits", type=int, help="hold-outs (default 10; 3 with --quick)")
    holdouts.add_argument("--test-fraction", type=float, default=0.2)
    holdouts.add_argument("--val-fraction", type=float, default=0.1)
    holdouts.add_argument("--mitigate", action="store_true",
                          help="also GroupDRO fine-tune each hold-out and write predictions_mitigated.csv")
    holdouts.add_argument("--resume", action="store_true", help="skip finished hold-outs, resume the others")
    holdouts.add_argument("--cache-dir", type=Path, help="preprocessed-image cache (default OUT/cache)")
    holdouts.add_argument("--devices", help="run hold-outs side by side, one process per device, e.g. "
                          "cuda:0,cuda:1 (default: every visible GPU when --device is auto)")

    finetune = commands.add_parser("finetune", help="GroupDRO fine-tuning of a trained model")
    _add_data_args(finetune)
    _add_config_args(finetune)
    finetune.add_argument("--checkpoint", type=Path, required=True, help="best.pt of the trained model, or its folder")
    finetune.add_argument("--attribute", action="append", required=True, help="demographic attribute (repeatable)")
    finetune.add_argument("--out", type=Path, required=True)
    finetune.add_argument("--val-fraction", type=float, default=0.1)
    finetune.add_argument("--test-ids", type=Path, help="file of image ids kept out and predicted")
    finetune.add_argument("--resume", action="store_true")

    control = commands.add_parser("control", help="image-classifier control: predict the attribute from the image")
    _add_data_args(control)
    control.add_argument("--attribute", required=True)
    control.add_argument("--out", type=Path, required=True, help="JSON report to write")
    control.add_argument("--n-splits", type=int, default=5, help="folds (the same as the error-based inference)")
    control.add_argument("--seed", type=int, default=0, help="fold seed (use the audit's)")
    control.add_argument("--encoder", default="resnet18")
    control.add_argument("--image-size", type=int, default=224)
    control.add_argument("--epochs", type=int, default=10)
    control.add_argument("--batch-size", type=int, default=16)
    control.add_argument("--lr", type=float, default=1e-3)
    control.add_argument("--device", default="auto")
    control.add_argument("--predictions", type=Path,
                         help="predictions CSV: also report the error-based inference on the same folds")
    return parser


def _load_data(args):
    from reference_model import datasets

    fmt, root = args.format, args.data
    if fmt == "generic":
        images = args.images or (root / "images" if root else None)
        landmarks = args.landmarks or (root / "landmarks.csv" if root else None)
        meta = args.meta or (root / "meta.csv" if root and (root / "meta.csv").is_file() else None)
        if images is None or landmarks is None:
            raise InputError(ERR_DATA_FORMAT.format(fmt=fmt, what="--data DIR, or --images and --landmarks"))
        return datasets.load_generic(images, landmarks, meta, spacing_mm=args.spacing_mm)
    if fmt == "dha":
        landmarks = args.landmarks or (root / "all.csv" if root else None)
        images = args.images or (root / "images" if root else None)
        if images is None or landmarks is None:
            raise InputError(ERR_DATA_FORMAT.format(fmt=fmt, what="--landmarks all.csv and --images DIR"))
        return datasets.load_dha(landmarks, images, meta_path=args.meta)
    if root is None:
        raise InputError(ERR_DATA_FORMAT.format(fmt=fmt, what="--data ROOT"))
    if fmt == "isbi2015":
        return datasets.load_isbi2015(root, annotator=args.annotator, meta_path=args.meta)
    data = datasets.load_cephadoadu(root, split=args.split, **({"spacing_mm": args.spacing_mm}
                                                                if args.spacing_mm else {}))
    if args.meta:
        extra = datasets.read_meta(args.meta)
        data.meta = data.meta.merge(extra.drop(columns=["age_group"], errors="ignore"), on="image_id", how="left")
    return data


_ARCHITECTURE = ("encoder", "encoder_depth", "decoder_channels", "image_size", "bn_momentum")


def _checkpoint_architecture(path: Path) -> dict:
    """The architecture options a checkpoint was trained with (fine-tuning keeps them)."""
    from reference_model.checkpoints import load_checkpoint
    from reference_model.train import CHECKPOINT_BEST

    path = path / CHECKPOINT_BEST if path.is_dir() else path
    saved = load_checkpoint(path, config_keys=_ARCHITECTURE)["config"]
    return {key: tuple(saved[key]) if key == "decoder_channels" else saved[key] for key in _ARCHITECTURE}


def _config(args, *, architecture: dict | None = None):
    from reference_model.config import TrainConfig, config_from_sources

    base = TrainConfig(**{**TrainConfig().__dict__, **(QUICK_PRESET if args.quick else {}),
                          **(architecture or {})})
    overrides = {name: getattr(args, name, None) for name in
                 list(_CONFIG_FLAGS) + ["decoder_channels", "augment", "subpixel", "bf16", "compile",
                                        "dro_balanced_sampling"]}
    return config_from_sources(config_file=args.config, overrides=overrides, base=base)


def _read_ids(path: Path | None, known: list[str]) -> list[str]:
    if path is None:
        return []
    if not path.is_file():
        raise InputError(f"id file {path}: not found; check the path")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    unknown = sorted(set(ids) - set(known))
    if unknown:
        raise InputError(f"id file {path}: unknown image id(s) {', '.join(unknown[:5])}; use ids of the dataset")
    return ids


def _split_for_training(args, data, *, seed: int):
    """Train/val/test LandmarkData-index lists for `train` and `finetune`."""
    from reference_model.holdouts import train_val_split

    test_ids = _read_ids(args.test_ids, data.image_ids)
    rest = data.meta[~data.meta["image_id"].isin(test_ids)]
    train_ids, val_ids = train_val_split(rest, args.attribute, val_fraction=args.val_fraction, seed=seed)
    return train_ids, val_ids, test_ids


def _write_test_predictions(model, prepared, test_ids, config, out_dir: Path) -> Path | None:
    if not test_ids:
        return None
    from reference_model.predict import predict_coords, predictions_frame, write_csv_atomic
    from reference_model.train import select_device

    test = prepared.subset(prepared.index_of(test_ids))
    coords = predict_coords(model, test, device=select_device(config.device), batch_size=config.batch_size,
                            subpixel=config.subpixel, bf16=config.bf16)
    return write_csv_atomic(predictions_frame(0, test, coords), out_dir / "test_predictions.csv")


def _cmd_synth(args) -> int:
    from reference_model.synth import SynthSpec, write_synthetic

    try:
        spec = SynthSpec(n_images=args.n_images, size=args.size, n_keypoints=args.n_keypoints,
                         female_fraction=args.female_fraction, effect_group=args.effect_group,
                         effect_keypoint=args.effect_keypoint, effect_contrast=args.effect_contrast,
                         effect_jitter=args.effect_jitter, spacing_mm=args.spacing_mm, seed=args.seed)
    except ValueError as exc:
        raise InputError(f"synth: {exc}") from None
    data = write_synthetic(args.out, spec)
    print(f"wrote {len(data.image_ids)} images with {data.n_keypoints} landmarks to {args.out} "
          f"(images/, landmarks.csv, meta.csv); planted: keypoint {spec.effect_keypoint} harder for "
          f"sex={spec.effect_group}")
    return 0


def _cmd_train(args) -> int:
    from reference_model.preprocess import prepare
    from reference_model.train import distributed_from_env, is_main_process, train_model

    config, data = _config(args), _load_data(args)
    train_ids, val_ids, test_ids = _split_for_training(args, data, seed=config.seed)
    with distributed_from_env():  # under torchrun: DistributedDataParallel over the ranks
        prepared = prepare(data, size=config.image_size, cache_dir=args.out / "cache", progress=is_main_process())
        result = train_model(train_data=prepared.subset(prepared.index_of(train_ids)),
                             val_data=prepared.subset(prepared.index_of(val_ids)), config=config,
                             out_dir=args.out, resume=args.resume)
        if not is_main_process():
            return 0
    (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    written = _write_test_predictions(result.model, prepared, test_ids, config, args.out)
    print(f"best validation MRE {result.best_val_mre_mm:.3f} mm at epoch {result.best_epoch} "
          f"({result.epochs_run} epochs run); checkpoint {args.out / 'best.pt'}"
          + (f"; test predictions {written}" if written else ""))
    return 0


def _cmd_predict(args) -> int:
    from reference_model.predict import predict_coords, predictions_frame, write_csv_atomic
    from reference_model.preprocess import prepare
    from reference_model.train import load_model, select_device

    device = select_device(args.device)
    model, config = load_model(args.checkpoint, device=device)
    data = _load_data(args)
    if data.n_keypoints != model.segmentation_head[0].out_channels:
        raise InputError(f"{args.checkpoint}: model predicts {model.segmentation_head[0].out_channels} landmarks "
                         f"but the data has {data.n_keypoints}; use the matching checkpoint")
    prepared = prepare(data, size=config.image_size, progress=True)
    coords = predict_coords(model, prepared, device=device, batch_size=args.batch_size, subpixel=args.subpixel)
    write_csv_atomic(predictions_frame(args.run, prepared, coords), args.out)
    print(f"wrote {len(prepared.image_ids) * data.n_keypoints} predictions to {args.out}")
    return 0


def _cmd_holdouts(args) -> int:
    from reference_model.protocol import run_holdouts

    config, data = _config(args), _load_data(args)
    n_splits = args.n_splits or (QUICK_N_SPLITS if args.quick else 10)
    summary = run_holdouts(data, attributes=args.attribute, config=config, out_dir=args.out, n_splits=n_splits,
                           test_fraction=args.test_fraction, val_fraction=args.val_fraction,
                           mitigate=args.mitigate, resume=args.resume, cache_dir=args.cache_dir,
                           devices=args.devices.split(",") if args.devices else None)
    for row in summary["holdouts"]:
        line = f"hold-out {row['holdout']}: test MRE {row['test_mre_mm']:.3f} mm"
        if "mitigated_test_mre_mm" in row:
            line += f", mitigated {row['mitigated_test_mre_mm']:.3f} mm"
        print(line)
    files = summary["files"]
    print(f"next: fairlandmark audit {files['predictions']} {files['meta']} "
          + " ".join(f"--attribute {a}" for a in args.attribute))
    return 0


def _cmd_finetune(args) -> int:
    from reference_model.finetune import finetune_groupdro
    from reference_model.preprocess import prepare

    config = _config(args, architecture=_checkpoint_architecture(args.checkpoint))
    data = _load_data(args)
    train_ids, val_ids, test_ids = _split_for_training(args, data, seed=config.seed)
    prepared = prepare(data, size=config.image_size, cache_dir=args.out / "cache", progress=True)
    meta = data.meta.set_index("image_id")
    result, objective = finetune_groupdro(
        checkpoint=args.checkpoint, train_data=prepared.subset(prepared.index_of(train_ids)),
        train_meta=meta.loc[train_ids].reset_index(), val_data=prepared.subset(prepared.index_of(val_ids)),
        val_meta=meta.loc[val_ids].reset_index(), attributes=args.attribute, config=config, out_dir=args.out,
        resume=args.resume)
    written = _write_test_predictions(result.model, prepared, test_ids, config, args.out)
    print(f"fine-tuned: best worst-subgroup validation MRE {result.best_val_mre_mm:.3f} mm at epoch "
          f"{result.best_epoch}; {objective.summary()}" + (f"; test predictions {written}" if written else ""))
    return 0


def _cmd_control(args) -> int:
    from reference_model.control import ControlConfig, run_image_control

    data = _load_data(args)
    config = ControlConfig(encoder=args.encoder, image_size=args.image_size, epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, device=args.device)
    report = run_image_control(data, attribute=args.attribute, n_splits=args.n_splits, seed=args.seed,
                               config=config, predictions_csv=args.predictions, out_path=args.out)
    print(f"image classifier: accuracy {report['image_accuracy_mean']:.3f} +- {report['image_accuracy_std']:.3f}"
          + (f"; error-based: {report['error_accuracy_mean']:.3f}" if report.get("error_accuracy_mean") is not None
             else "") + f" (chance {report['chance_accuracy']:.3f}); report {args.out}")
    return 0


_COMMANDS = {"synth": _cmd_synth, "train": _cmd_train, "predict": _cmd_predict, "holdouts": _cmd_holdouts,
             "finetune": _cmd_finetune, "control": _cmd_control}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "segmentation_models_pytorch", "PIL"):
            print(f"error: {ERR_NO_TORCH}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
