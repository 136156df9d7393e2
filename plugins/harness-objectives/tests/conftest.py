import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
# the helpers next to the tests (objectives_helpers.py, objectives_reference.py): uniquely named, so
# that this directory can be collected in one pytest run with the harness's own tests
sys.path.insert(0, str(Path(__file__).parent))
