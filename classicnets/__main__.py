"""``python -m classicnets`` (and ``torchrun -m classicnets``) run the command line."""

import sys

from .cli import main

sys.exit(main())
