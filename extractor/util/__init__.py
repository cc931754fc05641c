"""Small helpers with no knowledge of images or models: atomic writes, hashing, progress, timing."""
