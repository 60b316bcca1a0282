"""Training throughput of the reference U-Nets: fp32 eager against the optimised path, in one run.

For each encoder (default densenet121, resnet50, vgg19; 37 landmark channels,
1 input channel, 512x512, batch 8) it measures forward+backward+AdamW steps on
device-resident batches:

* ``fp32 eager``: true fp32 (TF32 off), NCHW, foreach AdamW, cudnn.benchmark off;
* ``tf32 eager``: the same with PyTorch's default of TF32 convolutions, reported
  so the speed-up over what an unchanged script gets is visible too;
* ``optimised``: bf16 autocast, channels_last, fused AdamW, cudnn.benchmark on;
* ``optimised + compile`` with ``--compile``: its cold compile time (fresh
  on-disk caches, as a study's first hold-out pays it) and the number of
  images after which it has paid for itself, beside a hold-out's length.

It also reports FLOPs per image (``torch.utils.flop_counter``, forward +
backward), hence achieved TFLOP/s and the share of the GPU's bf16 dense peak,
peak GPU memory, and, from the real training loop
(:func:`reference_model.train.train_model`: uint8 cache -> pinned DataLoader
-> GPU augmentation), images/s end to end and the data-loader wait as a share
of loop time, both from the loop's second epoch (steady state: persistent
workers already started, cudnn algorithms already chosen). The last line projects the paper's study: 10 hold-outs x 200
epochs x the training images of the Digital Hand Atlas (637 of 910), twice
that with GroupDRO mitigation.

On a machine without CUDA it runs a tiny configuration (64x64, batch 4, a few
steps; the optimised path uses CPU bf16 autocast and fused AdamW) and says so:
the code paths run, the numbers are not GPU figures.

Run: ``python benchmarks/train_throughput.py [--compile] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_model.config import TrainConfig  # noqa: E402
from reference_model.heatmap import spatial_softmax_ce, target_indices  # noqa: E402
from reference_model.model import build_unet  # noqa: E402
from reference_model.preprocess import PreparedData, geometry_for  # noqa: E402
from reference_model.train import train_model  # noqa: E402

N_KEYPOINTS = 37
STUDY_HOLDOUTS, STUDY_EPOCHS, STUDY_TRAIN_IMAGES, STUDY_VAL_IMAGES = 10, 200, 637, 91
# Dense bf16 tensor-core peaks, TFLOP/s, from the vendor data sheets; the more specific name first.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.5), ("H100", 989.4), ("H200", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("A10", 125.0))


def gpu_peak(name: str) -> float | None:
    """The bf16 dense peak of a CUDA device name, or None when unknown."""
    return next((value for key, value in BF16_PEAK_TFLOPS if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_image(encoder: str, size: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one image (fp32 graph; counted, not timed)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_unet(encoder=encoder, n_keypoints=N_KEYPOINTS).to(device)
    images = torch.rand(1, 1, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(images).float().mean().backward()
    return float(counter.get_total_flops())


def time_steps(encoder: str, *, size: int, batch: int, steps: int, warmup: int, device: torch.device,
               optimised: bool, compile_model: bool = False, tf32: bool = False) -> dict:
    """Images/s of training steps on a device-resident batch, and peak memory."""
    on_cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = optimised
    # fp32 means fp32: TF32 only where asked for, or where bf16 autocast leaves fp32 ops behind.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32 or optimised
    torch.manual_seed(0)
    model = build_unet(encoder=encoder, n_keypoints=N_KEYPOINTS).to(device)
    memory_format = torch.channels_last if optimised else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=optimised or None)
    step_model = torch.compile(model) if compile_model else model
    images = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=memory_format)
    coords = torch.rand(batch, N_KEYPOINTS, 2, device=device) * (size - 1)
    index, valid = target_indices(coords, size)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=optimised):
            logits = step_model(images)
        loss = spatial_softmax_ce(logits, index, valid).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    first_step = time.perf_counter() - start  # includes compilation when compiling
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": steps * batch / seconds, "first_step_s": first_step,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if on_cuda else None}


def compile_break_even(eager: dict, compiled: dict) -> float | None:
    """Images after which compiling has paid for itself; None when the compiled step is not faster.

    The compile time is the compiled first step less an eager first step; each
    later image saves ``1/eager_rate - 1/compiled_rate`` seconds.
    """
    saving = 1 / eager["images_per_s"] - 1 / compiled["images_per_s"]
    if saving <= 0:
        return None
    return max(compiled["first_step_s"] - eager["first_step_s"], 0.0) / saving


def loop_throughput(encoder: str, *, size: int, batch: int, steps: int, workers: int, device: torch.device) -> dict:
    """The real training loop (cache -> DataLoader -> GPU augmentation -> optimised step) for ``steps`` steps."""
    n_images = batch * steps
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, size, size), dtype=np.uint8)
    landmarks = rng.uniform(0, size - 1, size=(n_images, N_KEYPOINTS, 2))
    geometry = geometry_for(size, size, size)
    data = PreparedData(image_ids=[str(i) for i in range(n_images)], images=images, landmarks=landmarks,
                        landmarks_original=landmarks, geometries=[geometry] * n_images,
                        spacing_mm=np.full(n_images, 0.1))
    config = TrainConfig(encoder=encoder, image_size=size, batch_size=batch, grad_accumulation=1, epochs=2,
                         num_workers=workers, device=str(device), max_steps_per_epoch=steps)
    with tempfile.TemporaryDirectory() as out:
        result = train_model(train_data=data, val_data=data.subset(range(min(batch, n_images))), config=config,
                             out_dir=out, progress=False)
    epoch = result.history[-1]  # steady state: the first epoch also pays for worker start and cudnn tuning
    return {"images_per_s": epoch["images_seen"] / epoch["train_seconds"],
            "data_wait_share": epoch["data_wait_share"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="densenet121,resnet50,vgg19")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loader-steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the loop measurement")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--warm-compile-cache", action="store_true",
                        help="keep torch.compile's on-disk caches (default: time a cold compile)")
    parser.add_argument("--tiny", action="store_true", help="the CPU configuration, even on a GPU")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device.type == "cpu"
    if args.compile and not args.warm_compile_cache:
        # Cold caches: the compile time a study's first hold-out pays (later ones reuse the on-disk cache).
        cache = tempfile.mkdtemp(prefix="train_throughput_compile_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["TRITON_CACHE_DIR"] = cache, os.path.join(cache, "triton")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    if tiny:
        args.size, args.batch, args.steps, args.warmup, args.loader_steps, args.workers = 64, 4, 3, 1, 4, 0
        print("No CUDA device (or --tiny): running the TINY CPU configuration (64x64, batch 4, 3 steps). "
              "These numbers check the code paths; they are not GPU throughput figures.")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = gpu_peak(name) if device.type == "cuda" else None
    print(f"device: {name}; torch {torch.__version__}; {args.size}x{args.size}, batch {args.batch}, "
          f"{N_KEYPOINTS} keypoints")

    rows = []
    for encoder in args.encoders.split(","):
        flops = flops_per_image(encoder, args.size, device)
        measure = functools.partial(time_steps, encoder, size=args.size, batch=args.batch, steps=args.steps,
                                    warmup=args.warmup, device=device)
        eager = measure(optimised=False)
        tf32 = measure(optimised=False, tf32=True)
        fast = measure(optimised=True)
        row = {"encoder": encoder, "gflops_per_image": flops / 1e9, "eager": eager, "tf32_eager": tf32,
               "optimised": fast, "speedup": fast["images_per_s"] / eager["images_per_s"],
               "speedup_over_tf32": fast["images_per_s"] / tf32["images_per_s"]}
        if args.compile:
            row["compiled"] = measure(optimised=True, compile_model=True)
            row["compile_break_even_images"] = compile_break_even(fast, row["compiled"])
        row["loop"] = loop_throughput(encoder, size=args.size, batch=args.batch, steps=args.loader_steps,
                                      workers=args.workers, device=device)
        best = max(fast["images_per_s"], row.get("compiled", {}).get("images_per_s", 0.0))
        row["achieved_tflops"] = best * flops / 1e12
        row["peak_share"] = row["achieved_tflops"] / peak if peak else None
        image_steps = STUDY_HOLDOUTS * STUDY_EPOCHS * STUDY_TRAIN_IMAGES
        # Validation: a forward pass is about a third of a training step.
        equivalent = image_steps + STUDY_HOLDOUTS * STUDY_EPOCHS * STUDY_VAL_IMAGES / 3
        # A projection from 64x64 CPU steps would mean nothing for 512x512 GPU training.
        row["study_hours"] = None if tiny else equivalent / row["loop"]["images_per_s"] / 3600
        row["study_hours_mitigated"] = None if tiny else 2 * row["study_hours"]
        rows.append(row)
        line = (f"{encoder:12s} {flops / 1e9:8.1f} GFLOP/img | fp32 eager {eager['images_per_s']:8.1f} img/s | "
                f"tf32 eager {tf32['images_per_s']:8.1f} img/s | optimised {fast['images_per_s']:8.1f} img/s "
                f"(x{row['speedup']:.2f} over fp32, x{row['speedup_over_tf32']:.2f} over tf32)")
        if "compiled" in row:
            even = row["compile_break_even_images"]
            line += (f" | compiled {row['compiled']['images_per_s']:8.1f} img/s "
                     f"(compile {row['compiled']['first_step_s']:.0f} s, "
                     + ("never pays off" if even is None else
                        f"pays off after {even:,.0f} images; a hold-out trains up to "
                        f"{STUDY_EPOCHS * STUDY_TRAIN_IMAGES:,}") + ")")
        line += (f" | {row['achieved_tflops']:.2f} TFLOP/s" + (f" ({100 * row['peak_share']:.0f}% of bf16 peak)"
                                                              if peak else "")
                 + (f" | peak mem {fast['peak_memory_gib']:.1f} GiB" if fast["peak_memory_gib"] else "")
                 + f" | loop {row['loop']['images_per_s']:.1f} img/s, data wait "
                   f"{100 * row['loop']['data_wait_share']:.1f}%"
                 + (" | study projection: n/a (tiny)" if tiny else
                    f" | 10 hold-outs x 200 epochs: {row['study_hours']:.1f} h on one GPU "
                    f"({row['study_hours_mitigated']:.1f} h with mitigation)"))
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "tiny": tiny, "torch": torch.__version__,
                                         "size": args.size, "batch": args.batch, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
