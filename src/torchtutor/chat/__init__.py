"""Attention chatbot: corpus -> text -> vocab -> batches -> model -> train -> decode -> surfaces."""
