"""`chat serve`: the HTTP API, connection guards, micro-batching and the chat page (static/).
Imports `chat.infer`, never `chat.train`."""
