"""``python -m reference_model``: the same as ``fairlandmark-train``."""

import sys

from reference_model.cli import main

sys.exit(main())
