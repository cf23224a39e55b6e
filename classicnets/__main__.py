"""``python -m classicnets`` (and ``torchrun -m classicnets``) run the command line."""

from .commands import entry

entry()
