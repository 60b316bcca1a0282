"""``python -m fairlandmark.cli``: the same as the ``fairlandmark`` command."""

import sys

from fairlandmark.cli.main import main

sys.exit(main())
