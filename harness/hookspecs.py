"""The four hooks a plugin implements. Each receives ``register(name, factory, description=None)``."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("harness")
hookimpl = HookimplMarker("harness")


@hookspec
def harness_register_losses(register):
    """Register loss factories: ``factory(**params) -> torch.nn.Module``."""


@hookspec
def harness_register_encoders(register):
    """Register encoder factories: ``factory(**params) -> harness.types.Encoder``."""


@hookspec
def harness_register_datasets(register):
    """Register dataset factories: ``factory(**params) -> harness.types.Dataset``."""


@hookspec
def harness_register_evaluations(register):
    """Register evaluation factories: ``factory(**params) -> harness.types.Evaluation``."""
