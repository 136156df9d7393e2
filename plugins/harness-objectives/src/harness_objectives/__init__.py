"""harness-objectives: eight contrastive objectives from the literature, as a contrastive-harness plugin.

Installed (``pip install ./plugins/harness-objectives``), the ``harness`` entry point in
pyproject.toml points here and ``harness plugins`` lists the eight losses; a suite names them like
built-ins. Written as an outside author would: it uses only the harness's public plugin API,
``harness.api``, plus torch and pydantic.

=========================== ======================================== =================================
name                        paper                                    extras
=========================== ======================================== =================================
``cloob``                   Fürst et al. 2022 (CLOOB)
``dhel``                    Koromilas et al. 2024 (DHEL)
``hn_nce``                  Radenovic et al. 2023 (DiHT's HN-NCE)
``ifm``                     Robinson et al. 2021 (IFM)
``vicreg``                  Bardes et al. 2022 (VICReg)              ``image_raw``, ``text_raw``
``barlow_twins``            Zbontar et al. 2021 (Barlow Twins)       ``image_raw``, ``text_raw``
``clip_cosine_temperature`` Kukleva et al. 2023 (cosine tau schedule) ``step``, ``total_steps``
``negclip``                 Yuksekgonul et al. 2023 (NegCLIP)        ``text_negatives``
=========================== ======================================== =================================
"""

from harness.api import hookimpl
from harness_objectives.barlow_twins import BarlowTwinsLoss
from harness_objectives.clip_cosine_temperature import CosineTemperatureClipLoss
from harness_objectives.cloob import CLOOBLoss
from harness_objectives.dhel import DHELLoss
from harness_objectives.hn_nce import HardNegativeNCELoss
from harness_objectives.ifm import IFMLoss
from harness_objectives.negclip import NegCLIPLoss
from harness_objectives.vicreg import VICRegLoss

__version__ = "0.1.0"

#: loss name -> factory, in the order ``harness plugins`` lists them.
LOSSES = {
    "cloob": CLOOBLoss,
    "dhel": DHELLoss,
    "hn_nce": HardNegativeNCELoss,
    "ifm": IFMLoss,
    "vicreg": VICRegLoss,
    "barlow_twins": BarlowTwinsLoss,
    "clip_cosine_temperature": CosineTemperatureClipLoss,
    "negclip": NegCLIPLoss,
}

__all__ = ["LOSSES", "harness_register_losses", *(f.__name__ for f in LOSSES.values())]


@hookimpl
def harness_register_losses(register):
    for name, factory in LOSSES.items():
        register(name, factory)
