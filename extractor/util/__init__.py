"""Small helpers with no knowledge of images or models: atomic writes, directory locks, hashing, progress, timing,
safe text cells, the options both CLIs share and the package roots' lazy exports."""
