"""alexfeat: ImageNet-pretrained AlexNet embeddings in TensorFlow/Keras.

The package ``extractor`` holds the network, the weight readers, image decoding, the embedding
pipeline, the Parquet store and the classifier heads; ``index`` holds FAISS search.
"""

__version__ = "0.1.0"
