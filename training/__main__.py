"""``python -m training`` (and ``torchrun -m training``) is the ``lit-train`` command."""

from training.cli import app

app()
