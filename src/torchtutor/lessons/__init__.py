"""The 60-minute blitz as narrated lessons: tensors, autograd, networks."""
