"""Built-in datasets, registered through the public hook like any third-party plugin.

- ``shapes``: a procedurally generated, seeded image-caption world (offline; the default).
- ``digits``: scikit-learn's real handwritten digits, captioned (offline).
- ``image_text_files``: local CSV/TSV or webdataset image-caption pairs (open_clip's formats).
- ``clip_benchmark``: evaluation-only sets from clip_benchmark's builders (local data).

Heavy libraries (scikit-learn, PIL, clip_benchmark) are imported inside the factories.
"""

from harness.api import hookimpl
from harness.builtin.datasets.clip_benchmark_sets import ClipBenchmarkSets
from harness.builtin.datasets.digits import DigitsDataset
from harness.builtin.datasets.image_text_files import ImageTextFiles
from harness.builtin.datasets.shapes import ShapesDataset


@hookimpl
def harness_register_datasets(register):
    register("shapes", ShapesDataset)
    register("digits", DigitsDataset)
    register("image_text_files", ImageTextFiles)
    register("clip_benchmark", ClipBenchmarkSets)
