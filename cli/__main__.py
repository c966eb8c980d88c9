"""``python -m cli``: the same as the ``zcurate`` command (the service starts its jobs this way)."""

from cli.main import app

app()
