"""heaggquickstart: Flower's quickstart-pytorch, with he-agg aggregating the models."""
