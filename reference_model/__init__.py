"""Reference U-Net heatmap landmark detector for fairlandmark audits.

An optional extra (``pip install fairlandmark[train]``): it trains the paper's
model (smp U-Net, one single-hot-pixel heatmap per landmark, spatial-softmax
cross-entropy, argmax decoding), writes long-format predictions that
``fairlandmark audit`` reads, fine-tunes with GroupDRO over keypoint x group
subgroups, and runs the image-classifier control.

The numpy-only modules (:mod:`~reference_model.datasets`,
:mod:`~reference_model.synth`, :mod:`~reference_model.preprocess`,
:mod:`~reference_model.holdouts`, :mod:`~reference_model.config`) import
without torch; everything else needs the ``[train]`` extra. The core
``fairlandmark`` package never imports this one.
"""

__all__ = ["InputError"]

from reference_model.errors import InputError  # noqa: E402
