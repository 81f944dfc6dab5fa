"""Data: image lists, ILSVRC boxes, preprocessing, the embedded benchmark."""
