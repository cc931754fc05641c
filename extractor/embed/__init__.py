"""The embed job: plan (resume), decode in worker processes, infer, commit to the store."""
