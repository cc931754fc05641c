"""AlexNet in Keras: architecture tables, the model, weight readers, the feature extractor."""
