"""The built-in plugins. They use only the public plugin API (``harness.hookimpl``, ``harness.types``)."""
