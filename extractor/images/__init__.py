"""Image inputs: walking a folder, reading a file once, decoding it to the network's input."""
