"""Chat inference: the reference decoders (greedy, beam, sampling), MMI reranking, decoding
options and display text. Imports `chat.data` and `chat.model`; never `chat.train` or
`chat.fast`."""
