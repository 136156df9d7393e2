"""Built-in datasets, registered through the public hook like any third-party plugin."""

from harness import hookimpl


@hookimpl
def harness_register_datasets(register):
    pass
