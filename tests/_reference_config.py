"""The tiny CPU training configuration that the reference-model tests share (each file varies it with replace)."""

from __future__ import annotations

from reference_model.config import TrainConfig

# A 0.4M-parameter U-Net at 64 x 64: a whole training run takes seconds on two CPU cores.
TINY = TrainConfig(encoder="tu-mobilenetv3_small_050", decoder_channels=(32, 16, 16, 8, 8), image_size=64,
                   batch_size=8, grad_accumulation=1, epochs=4, lr=1e-2, lr_gamma=0.95, bn_momentum=0.5,
                   patience=100, device="cpu", seed=0)
# GroupDRO fine-tuning settings of the mitigation tests.
TINY_GROUPDRO = TINY.replace(finetune_epochs=10, finetune_lr=2e-3, dro_step_size=0.05)
