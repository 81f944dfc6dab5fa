"""The library API: metrics built from config mappings, streamed per sample or per batch, dumped to JSON/YAML.

The shape of the ``saliency_metrics`` framework in salbench's terms::

    from salbench.api import build_metric

    metric = build_metric({"type": "insertion", "step": 224}, model=model, mean=MEAN, std=STD)
    for images, maps, targets in batches:
        metric.update(images, maps, targets)        # or metric.update(metric.evaluate(img, smap, t))
    metric.get_result()["value"]; metric.dump("insertion.yaml")

Every metric of :data:`salbench.metrics.METRICS` is available, computed by its own batched function;
``{"type": "roar"}`` builds a re-training metric; :func:`sanity_check` runs the randomisation checks
for a registered method or any callable ``(model, images, targets) -> maps``. :func:`build_method`
builds a saliency method with the parameters the command line gives it under a protocol.
"""

from salbench.api.checks import AttributionMethod, SanityResult, sanity_check
from salbench.api.factory import build_metric
from salbench.api.reinference import ReInferenceMetric
from salbench.api.results import dump_result, load_result
from salbench.api.roar import ReTrainingMetric
from salbench.methods.factory import build_method

__all__ = [
    "AttributionMethod",
    "ReInferenceMetric",
    "ReTrainingMetric",
    "SanityResult",
    "build_method",
    "build_metric",
    "dump_result",
    "load_result",
    "sanity_check",
]
