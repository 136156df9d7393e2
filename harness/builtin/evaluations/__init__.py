"""Built-in evaluations, registered through the public hook like any third-party plugin.

Each evaluation works from the job's cached embeddings (``harness.types.EvalContext``) plus the
text encoder for prompts and words; sklearn and clip_benchmark are imported only when used.
"""

from harness.api import hookimpl
from harness.builtin.evaluations.arithmetic import Arithmetic
from harness.builtin.evaluations.gap import Gap
from harness.builtin.evaluations.gap_shift import GapShift
from harness.builtin.evaluations.linear_probe import LinearProbe
from harness.builtin.evaluations.retrieval import Retrieval
from harness.builtin.evaluations.zeroshot import ZeroShotClassification


@hookimpl
def harness_register_evaluations(register):
    register("gap", Gap)
    register("zeroshot_classification", ZeroShotClassification)
    register("retrieval", Retrieval)
    register("arithmetic", Arithmetic)
    register("linear_probe", LinearProbe)
    register("gap_shift", GapShift)
