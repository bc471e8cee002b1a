"""Machinery shared by the apps: devices, seeds, checkpoints, logs, downloads, distributed.

Nothing here imports from `lessons`, `vision` or `chat`.
"""
