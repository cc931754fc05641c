"""bfloat16 inference: the choice of precision, and the network's custom layers under the mixed_bfloat16 policy."""

from __future__ import annotations

import numpy as np
import pytest

from extractor.errors import AlexfeatError
from extractor.network import precision as precision_module
from extractor.network.precision import cpu_bfloat16_flags, resolve_precision

CPUINFO = "processor\t: {n}\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\n"


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    """Decide from the CPU alone, on machines with an NVIDIA GPU too."""
    monkeypatch.setattr(precision_module, "NVIDIA_GPUS", tmp_path / "no-nvidia")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)


def cpuinfo(tmp_path, extra: str):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(n=0, extra=extra) + CPUINFO.format(n=1, extra=extra))
    return path


def test_auto_reads_the_cpu_flags(tmp_path, no_gpu):
    amx = resolve_precision("auto", cpuinfo(tmp_path, "avx512_bf16 amx_tile amx_bf16"))
    assert (amx.name, amx.policy, str(amx)) == (
        "bfloat16",
        "mixed_bfloat16",
        "bfloat16 (auto: CPU has amx_bf16/avx512_bf16)",
    )
    zen4 = resolve_precision("auto", cpuinfo(tmp_path, "avx512_bf16"))
    assert zen4.name == "bfloat16" and "avx512_bf16" in zen4.reason
    plain = resolve_precision("auto", cpuinfo(tmp_path, "avx512_fp16 amx_int8"))
    assert str(plain) == "float32 (auto: no bfloat16 on this CPU)" and plain.policy == "float32"
    assert resolve_precision("auto", tmp_path / "missing").name == "float32"  # not Linux
    assert cpu_bfloat16_flags(tmp_path / "missing") == []


def test_auto_keeps_float32_where_onednn_is_off(tmp_path, no_gpu, monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    chosen = resolve_precision("auto", cpuinfo(tmp_path, "amx_bf16"))
    assert chosen.name == "float32" and "TF_ENABLE_ONEDNN_OPTS=0" in chosen.reason


def test_explicit_precisions_and_a_clear_error(tmp_path, no_gpu):
    assert str(resolve_precision("float32", cpuinfo(tmp_path, "amx_bf16"))) == "float32 (asked for)"
    assert str(resolve_precision("bfloat16", cpuinfo(tmp_path, "amx_bf16"))) == "bfloat16 (asked for)"
    emulated = resolve_precision("bfloat16", cpuinfo(tmp_path, ""))
    assert emulated.name == "bfloat16" and "emulated, slower than float32" in emulated.reason
    with pytest.raises(AlexfeatError, match="unknown precision 'half': choose one of auto, float32, bfloat16"):
        resolve_precision("half")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("arch", ["caffe", "torchvision"])
def test_custom_layers_run_under_mixed_bfloat16(arch):
    """LRN (no bfloat16 kernel on CPUs), grouped convolutions, GeM and the global pools under the policy: the
    model runs, computes its convolutions in bfloat16, pools in float32 and agrees with the float32 model."""
    import keras
    import tensorflow as tf

    from extractor.network.model import AlexNet, GeneralizedMeanPooling, Preprocess

    size = 227 if arch == "caffe" else 224
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    outputs = {}
    for dtype in ("float32", "mixed_bfloat16"):
        base = AlexNet(arch=arch, weights="random", pooling=None, dtype=dtype)
        assert base.get_layer("conv2").compute_dtype == ("bfloat16" if dtype == "mixed_bfloat16" else "float32")
        inputs = keras.Input((size, size, 3), dtype="uint8")
        maps = base(Preprocess(arch)(inputs))
        model = keras.Model(inputs, [maps, GeneralizedMeanPooling()(maps)])
        compiled = tf.function(lambda x, model=model: model(x, training=False))
        maps, gem = compiled(images)
        assert (maps.dtype, gem.dtype) == (tf.bfloat16 if dtype == "mixed_bfloat16" else tf.float32, tf.float32)
        outputs[dtype] = [maps.numpy().astype(np.float32), gem.numpy()]
        gap = AlexNet(arch=arch, weights="random", pooling="avg", dtype=dtype)
        assert gap.output.dtype == "float32"
        outputs[dtype].append(gap.predict(Preprocess(arch)(images).numpy(), verbose=0))
    (maps32, gem32, gap32), (maps16, gem16, gap16) = outputs["float32"], outputs["mixed_bfloat16"]
    assert gap16.dtype == np.float32
    assert _cosines(maps32, maps16).min() > 0.999
    assert _cosines(gem32, gem16).min() > 0.9999 and _cosines(gap32, gap16).min() > 0.9999


def test_layers_follow_the_global_policy_and_pool_in_float32():
    """With Keras' global policy (a user's ``keras.config.set_dtype_policy``) and no dtype given, the caffe net (LRN)
    runs in bfloat16 and a GeM layer still pools in float32."""
    import keras

    from extractor.network.model import AlexNet, GeneralizedMeanPooling

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = AlexNet(arch="caffe", weights="random", pooling=None)
        gem = GeneralizedMeanPooling()
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.get_layer("norm1").compute_dtype == "bfloat16" and gem.compute_dtype == "float32"
    maps = model(np.zeros((1, 227, 227, 3), np.float32))
    assert str(maps.dtype) == "<dtype: 'bfloat16'>" and gem(maps).dtype == "float32"


# --- FeatureExtractor(precision=...) ---------------------------------------------------------------------------


def test_bfloat16_extractor_embeds_a_few_images_into_float32_unit_vectors():
    from extractor.network.features import FeatureExtractor

    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    bf16 = FeatureExtractor("random", precision="bfloat16")
    f32 = FeatureExtractor("random", precision="float32")
    assert (bf16.spec.precision, f32.spec.precision) == ("bfloat16", "float32")
    assert bf16.spec.differences(f32.spec) == []  # compatible: precision is not a compatibility field
    assert bf16.model.get_layer("alexnet_torchvision").get_layer("conv3").compute_dtype == "bfloat16"
    vectors = bf16(images)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert _cosines(vectors, f32(images)).min() > 0.9999
    rebuilt = FeatureExtractor.from_metadata(f32.spec, precision="bfloat16")  # a float32 dataset, a bfloat16 query
    assert rebuilt.spec.precision == "bfloat16"
    np.testing.assert_array_equal(rebuilt(images), vectors)


def dev_photos(dev_images, count: int = 40) -> list[str]:
    """``count`` photos of the dev set spread over its classes (sorted, every n-th)."""
    paths = sorted(str(p) for p in dev_images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths[:: max(1, len(paths) // count)][:count]


@pytest.mark.parametrize("arch", ["caffe", "torchvision"])
def test_bfloat16_agrees_with_float32_on_real_photos(arch, dev_images, caffe_weights):
    """The shared ImageNet weights for caffe; no torchvision ImageNet weights are stored here, so random ones
    (seeded He initialisation) for torchvision, and its fc7 too (the fully connected path)."""
    from extractor.network.features import FeatureExtractor

    paths = dev_photos(dev_images)
    settings = [("pool5", "gem"), ("pool5", "avg")] if arch == "caffe" else [("pool5", "gem"), ("fc7", "avg")]
    weights = str(caffe_weights) if arch == "caffe" else "random"
    for layer, pooling in settings:
        vectors = {}
        for precision in ("float32", "bfloat16"):
            extractor = FeatureExtractor(weights, arch=arch, layer=layer, pooling=pooling, precision=precision)
            found = extractor.embed_images(paths)
            assert len(found.indices) == len(paths) and not found.failures
            vectors[precision] = found.values
        cosines = _cosines(vectors["float32"], vectors["bfloat16"])
        assert cosines.min() >= 0.9999, (arch, layer, pooling, cosines.min())


@pytest.mark.parametrize(("pooling", "tta"), [("rmac", "none"), ("gem", "flip")])
def test_rmac_and_tta_run_in_bfloat16_and_agree_with_float32(pooling, tta):
    from extractor.network.features import FeatureExtractor

    images = np.random.default_rng(1).integers(0, 256, (2, 227, 227, 3), dtype=np.uint8)
    vectors = {
        precision: FeatureExtractor("random", "caffe", pooling=pooling, tta=tta, precision=precision)(images)
        for precision in ("float32", "bfloat16")
    }
    assert vectors["bfloat16"].dtype == np.float32
    assert _cosines(vectors["float32"], vectors["bfloat16"]).min() > 0.9999
