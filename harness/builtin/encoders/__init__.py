"""Built-in encoders, registered through the public hook like any third-party plugin."""

from harness import hookimpl


@hookimpl
def harness_register_encoders(register):
    pass
