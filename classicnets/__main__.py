"""``python -m classicnets`` (and ``torchrun -m classicnets``) run the command line."""

from .cli import entry

entry()
