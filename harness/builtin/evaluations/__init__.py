"""Built-in evaluations, registered through the public hook like any third-party plugin."""

from harness import hookimpl


@hookimpl
def harness_register_evaluations(register):
    pass
