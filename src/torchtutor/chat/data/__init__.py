"""Chat data: corpus -> normalized text -> vocabulary -> prepared splits -> token store -> batches.

Imports only `torchtutor.runtime` and its own modules: everything else in `chat` lies downstream.
"""
