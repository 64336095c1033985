"""The `prep` command: a thin shell over the Python API with the same verbs (prep.verbs), its options built
from the options tables. `shell` holds what every verb shares, `commands` the verbs themselves."""

from prep.cli import commands as _commands  # noqa: F401 - the verbs register themselves on `main`
from prep.cli.shell import main, run

__all__ = ["main", "run"]
