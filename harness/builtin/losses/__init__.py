"""Built-in losses, registered through the public hook like any third-party plugin."""

from harness import hookimpl


@hookimpl
def harness_register_losses(register):
    pass
