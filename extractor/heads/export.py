"""Export a head or fine-tuned directory as one model on decoded images.

The model is Preprocess + base + pooling + L2 normalisation + head: uint8 RGB images (N, S, S, 3), already
decoded and resized to the input size by alexfeat's decoder (the ``resize`` policy in the class file), in;
class probabilities, in the order of the class file, out.

- ``keras``: one ``.keras`` file, loadable with ``keras.models.load_model`` in a process that imports
  ``extractor.network.model`` (it registers the custom layers); the class file is ``NAME.classes.json`` beside it.
- ``savedmodel``: a TensorFlow SavedModel directory (``tf.saved_model.load(DIR).serve(images)``, or the
  ``serving_default`` signature), with ``classes.json`` inside; no alexfeat import needed to run it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractor.errors import AlexfeatError
from extractor.heads.classifier_dir import ClassifierDir
from extractor.util.atomic import atomic_dir, check_replaceable, write_text_atomic

EXPORT_FORMATS = ("keras", "savedmodel")


@dataclass(frozen=True)
class ExportResult:
    """Where the model and its class file went, and what the model takes and gives."""

    path: Path
    classes_path: Path
    input_size: int
    resize: str  # the decoder's resize policy that makes the model's input
    classes: list[str]


def classes_document(classifier: ClassifierDir) -> str:
    """The class file: class names in output order, and how to make the model's input."""
    return (
        json.dumps(
            {
                "classes": classifier.classes,
                "input_size": classifier.meta.input_size,
                "resize": classifier.meta.resize,
                "input": "uint8 RGB (N, S, S, 3), 0..255",
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )


def export_classifier(
    classifier: ClassifierDir, out: str | os.PathLike[str], fmt: str = "keras", weights: str | None = None
) -> ExportResult:
    """Write the end-to-end model of ``classifier`` to ``out`` (replacing an earlier export there)."""
    if fmt not in EXPORT_FORMATS:
        raise AlexfeatError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if fmt == "keras" and out.suffix != ".keras":
        raise AlexfeatError(
            f"a Keras model file must end in .keras (Keras refuses other names): use "
            f"-o {out.with_suffix('.keras') if out.name not in ('', '..') else 'model.keras'}, or --format "
            "savedmodel for a directory"
        )
    if fmt == "savedmodel":
        check_replaceable(out)  # before the model is built
    model = classifier.end_to_end(weights)
    if fmt == "keras":
        classes_path = out.with_name(f"{out.stem}.classes.json")
        _save_keras(model, out)
        write_text_atomic(classes_path, classes_document(classifier))
    else:
        classes_path = out / "classes.json"
        _save_savedmodel(model, out, classes_document(classifier))
    return ExportResult(out, classes_path, classifier.meta.input_size, classifier.meta.resize, list(classifier.classes))


def _save_keras(model: Any, out: Path) -> None:
    if out.is_dir():
        raise AlexfeatError(f"{out} is a directory; give a file name ending in .keras")
    tmp = out.with_name(f".{out.stem}.tmp.keras")  # Keras insists on the suffix
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save(tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise AlexfeatError(f"cannot write {out} ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _save_savedmodel(model: Any, out: Path, classes_text: str) -> None:
    if out.exists() and not (out.is_dir() and (not os.listdir(out) or (out / "saved_model.pb").exists())):
        raise AlexfeatError(f"{out} exists and is not a SavedModel directory; choose a new path")
    try:
        with atomic_dir(out) as staging:
            model.export(str(staging), format="tf_saved_model", verbose=False)
            (staging / "classes.json").write_text(classes_text, encoding="utf-8")
    except OSError as exc:
        raise AlexfeatError(f"cannot write {out} ({exc})") from exc
