"""Ordered thread/process pools and batching."""
