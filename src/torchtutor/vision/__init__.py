"""Image classifier: data -> models -> train/evaluate -> predict."""
