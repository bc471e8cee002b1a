"""Chat training: the loop down to `backward()`, and the run around it (setup, validation,
logging, checkpoints, resume, torchrun). Imports `chat.data`, `chat.model`, `chat.config`."""
