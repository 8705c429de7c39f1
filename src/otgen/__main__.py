"""``python -m otgen``: the ``otgen`` command line."""

import sys

from otgen.cli.main import main

sys.exit(main())
