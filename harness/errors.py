"""User-facing errors: one line, exit code 2 at the CLI."""


class HarnessError(Exception):
    """Bad input from the user (suite file, plugin name, params). The CLI prints it on one line, exit 2."""

    exit_code = 2


class PluginNotFound(HarnessError, KeyError):
    """No plugin of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginConflict(HarnessError):
    """Two distributions registered the same plugin name."""
