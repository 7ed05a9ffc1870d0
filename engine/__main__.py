"""``python -m engine`` is the ``engine`` command."""

import sys

from engine.cli.main import main

sys.exit(main())
