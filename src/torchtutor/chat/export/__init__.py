"""`chat export`: AOTInductor packages, ONNX, TorchScript and the standalone chatbot.py.
Imports `chat.infer`, never `chat.train`."""
