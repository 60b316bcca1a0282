"""``python -m fairlandmark.cli``: the same as the ``fairlandmark`` command."""

import sys

from fairlandmark.cli import main

sys.exit(main())  # type: ignore[operator]  # the package's 'main' property is the entry point
