"""Classifier heads on cached embeddings: train, labels, metrics, predict, export, finetune."""
