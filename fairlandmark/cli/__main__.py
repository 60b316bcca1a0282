"""``python -m fairlandmark.cli``: the command line, as the ``fairlandmark`` script runs it."""

import sys

from fairlandmark.cli.main import main

sys.exit(main())
