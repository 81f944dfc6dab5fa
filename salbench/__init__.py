"""salbench: generate saliency maps for image classifiers and evaluate them with the field's metrics."""

__version__ = "0.1.0"
