"""harness-objectives: eleven contrastive objectives from the literature, as a contrastive-harness plugin.

Installed (``pip install ./plugins/harness-objectives``), the ``harness`` entry point in
pyproject.toml points here and ``harness plugins`` lists the eleven losses; a suite names them like
built-ins. Written as an outside author would: it uses only the harness's public plugin API,
``harness.api``, plus torch and pydantic.

=========================== ======================================== =========================================
name                        paper                                    extras (and state)
=========================== ======================================== =========================================
``cloob``                   Fürst et al. 2022 (CLOOB)
``dhel``                    Koromilas et al. 2024 (DHEL)
``hn_nce``                  Radenovic et al. 2023 (DiHT's HN-NCE)
``ifm``                     Robinson et al. 2021 (IFM)
``vicreg``                  Bardes et al. 2022 (VICReg)              ``image_raw``, ``text_raw``
``barlow_twins``            Zbontar et al. 2021 (Barlow Twins)       ``image_raw``, ``text_raw``
``clip_cosine_temperature`` Kukleva et al. 2023 (cosine tau schedule) ``step``, ``total_steps``
``negclip``                 Yuksekgonul et al. 2023 (NegCLIP)        ``text_negatives``
``sogclr``                  Yuan et al. 2022 (SogCLR)                ``index``; ``setup(dataset_size)``: per-pair
                                                                     moving averages
``unicl``                   Yang et al. 2022 (UniCL)                 ``caption_group``
``albef_itc``               Li et al. 2021 (ALBEF's ITC)             ``image_momentum``, ``text_momentum``
                                                                     (``momentum`` attribute: EMA towers);
                                                                     feature queues; ``step`` when
                                                                     ``alpha_warmup_steps`` > 0
=========================== ======================================== =========================================

The last three use contract v3's extras (``index``, ``caption_group``, ``image_momentum``,
``text_momentum``), the optional ``setup(dataset_size)`` and loss state (their buffers, saved with
the job's checkpoint and restored on resume).
"""

from harness.api import hookimpl
from harness_objectives.albef_itc import AlbefITCLoss
from harness_objectives.barlow_twins import BarlowTwinsLoss
from harness_objectives.clip_cosine_temperature import CosineTemperatureClipLoss
from harness_objectives.cloob import CLOOBLoss
from harness_objectives.dhel import DHELLoss
from harness_objectives.hn_nce import HardNegativeNCELoss
from harness_objectives.ifm import IFMLoss
from harness_objectives.negclip import NegCLIPLoss
from harness_objectives.sogclr import SogCLRLoss
from harness_objectives.unicl import UniCLLoss
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
    "sogclr": SogCLRLoss,
    "unicl": UniCLLoss,
    "albef_itc": AlbefITCLoss,
}

__all__ = ["LOSSES", "harness_register_losses", *(f.__name__ for f in LOSSES.values())]


@hookimpl
def harness_register_losses(register):
    for name, factory in LOSSES.items():
        register(name, factory)
