"""The paper's network: an smp U-Net, 1 input channel, one output channel per landmark."""

from __future__ import annotations

from pathlib import Path

import torch

from reference_model.errors import InputError

__all__ = ["build_unet", "load_encoder_weights"]

ERR_UNKNOWN_ENCODER = "encoder {name!r}: not an smp encoder ({reason}); try densenet121, resnet50, vgg19 or resnet18"
ERR_WEIGHTS_FILE = "encoder weights {path}: {reason}; give a local state-dict file saved with torch.save"
ERR_WEIGHTS_MISMATCH = (
    "encoder weights {path}: only {matched} of {total} encoder tensors match by name and shape; "
    "is it the state dict of a {encoder} encoder?"
)


def build_unet(*, encoder: str, n_keypoints: int, encoder_depth: int = 5,
               decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16), encoder_weights: str | Path | None = None,
               bn_momentum: float | None = None) -> torch.nn.Module:
    """An ``smp.Unet`` for heatmap regression; nothing is downloaded.

    Parameters
    ----------
    encoder : str
        Any smp encoder name (paper: ``densenet121``; also ``resnet50``, ``vgg19``).
    n_keypoints : int
        Output channels, one heatmap per landmark.
    encoder_depth : int, default 5
    decoder_channels : sequence of int
        One width per encoder stage.
    encoder_weights : path, optional
        Local state-dict file of ImageNet weights for the encoder (see
        :func:`load_encoder_weights`).
    bn_momentum : float, optional
        Momentum of every BatchNorm's running statistics (PyTorch's default
        0.1 when None). Very short runs evaluate better with a larger one,
        as the running statistics then follow the fast-changing weights.
    """
    import segmentation_models_pytorch as smp

    try:
        model = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=n_keypoints,
                         encoder_depth=encoder_depth, decoder_channels=tuple(decoder_channels))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise InputError(ERR_UNKNOWN_ENCODER.format(name=encoder, reason=str(exc).splitlines()[0][:120])) from None
    if encoder_weights is not None:
        load_encoder_weights(model.encoder, encoder_weights, encoder_name=encoder)
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    return model


def load_encoder_weights(encoder: torch.nn.Module, path: str | Path, *, encoder_name: str = "") -> None:
    """Load a local (ImageNet) state dict into a 1-channel encoder.

    A 3-channel first convolution is summed over its input channels, which
    gives the same response to a grey image replicated on three channels.
    Keys may carry an ``encoder.`` prefix; classifier keys (``fc``,
    ``classifier``) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(ERR_WEIGHTS_FILE.format(path=path, reason="not found"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(ERR_WEIGHTS_FILE.format(path=path, reason=f"cannot load it ({type(exc).__name__})")) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    own = encoder.state_dict()
    matched = {}
    for key, value in state.items():
        key = key.removeprefix("encoder.")
        if key not in own or not isinstance(value, torch.Tensor):
            continue
        if value.ndim == 4 and own[key].ndim == 4 and value.shape[1] == 3 and own[key].shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)
        if value.shape == own[key].shape:
            matched[key] = value
    if len(matched) < 0.9 * len(own):
        raise InputError(ERR_WEIGHTS_MISMATCH.format(path=path, matched=len(matched), total=len(own),
                                                     encoder=encoder_name or "this"))
    encoder.load_state_dict(matched, strict=False)
