"""alexfeat: ImageNet-pretrained AlexNet embeddings in TensorFlow/Keras.

The package ``extractor`` holds the network, the weight readers, image decoding, the embedding
pipeline, the Parquet store and the classifier heads; ``index`` holds FAISS search.

The Python API, one call per command (names are imported on first use, so ``import extractor`` does not load
TensorFlow)::

    embed_folder(source, out_dir, weights=None, ...) -> EmbedSummary              # alexfeat embed
    train_head_dir(emb_dir, out_dir, labels="label", ...) -> ClassifierResult    # alexfeat train
    predict_files(head_dir, files, ...) -> iterator of Prediction | PredictError  # alexfeat predict
    predict_dataset(head_dir, emb_dir, top=3) -> list[Prediction]                # alexfeat predict --embeddings
    export_model(head_dir, out, fmt="keras") -> ExportResult                     # alexfeat export
    finetune_dir(images_dir, out_dir, head_dir, ...) -> ClassifierResult         # alexfeat finetune
    load_dataset(emb_dir) -> Dataset; FeatureExtractor(weights, ...); AlexNet(...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from extractor.util.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    "AlexfeatError": "extractor.errors",
    "embed_folder": "extractor.embed.job",
    "EmbedJob": "extractor.embed.job",
    "EmbedSummary": "extractor.embed.job",
    "FeatureExtractor": "extractor.network.features",
    "AlexNet": "extractor.network.model",
    "preprocess_input": "extractor.network.model",
    "Dataset": "extractor.store",
    "EmbeddingMeta": "extractor.store",
    "load_dataset": "extractor.store",
    "read_meta": "extractor.store",
    "read_errors": "extractor.store",
    "ClassifierResult": "extractor.heads.api",
    "train_head_dir": "extractor.heads.api",
    "predict_files": "extractor.heads.api",
    "predict_dataset": "extractor.heads.api",
    "load_image_classifier": "extractor.heads.api",
    "export_model": "extractor.heads.api",
    "finetune_dir": "extractor.heads.api",
    "Prediction": "extractor.heads.predict",
    "PredictError": "extractor.heads.predict",
    "ExportResult": "extractor.heads.export",
}
__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on first use
    from extractor.embed.job import EmbedJob, EmbedSummary, embed_folder  # noqa: F401
    from extractor.errors import AlexfeatError  # noqa: F401
    from extractor.heads.api import (  # noqa: F401
        ClassifierResult,
        export_model,
        finetune_dir,
        load_image_classifier,
        predict_dataset,
        predict_files,
        train_head_dir,
    )
    from extractor.heads.export import ExportResult  # noqa: F401
    from extractor.heads.predict import PredictError, Prediction  # noqa: F401
    from extractor.network.features import FeatureExtractor  # noqa: F401
    from extractor.network.model import AlexNet, preprocess_input  # noqa: F401
    from extractor.store import Dataset, EmbeddingMeta, load_dataset, read_errors, read_meta  # noqa: F401

__getattr__, __dir__ = lazy_exports(__name__, _API, globals())
