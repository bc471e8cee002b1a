"""What only makes decoding cheaper (int8 weights). Optional: a caller chooses it and passes it
in; nothing in `chat.infer` reaches it. Never changes a default reply."""
