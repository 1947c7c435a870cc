"""``python -m vqswitch.cli ...``: the ``vqswitch`` console script."""
import sys

from vqswitch.cli import main

sys.exit(main())
