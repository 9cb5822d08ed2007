"""The public Python API (load_segmenter, Segmenter; README.md) on the tiny ProxyCLIP
engine: loading from a dict or YAML, vocabularies, predictions, runtime settings, weights errors."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
import yaml

import ovseg_ros
from ovseg_ros import (ConfigError, InputError, Prediction, VocabularyError, load_segmenter)
from ovseg_ros.weights import WeightsError

from conftest import TINY_CONFIG_PATH


def test_documented_usage(tiny_config, rgb_frame):
    seg = ovseg_ros.load_segmenter(tiny_config)
    seg.set_vocabulary(["person", "sofa,couch", "floor"])
    pred = seg.predict(rgb_frame, scores=True)
    assert isinstance(pred, Prediction)
    assert pred.semantic.shape == (96, 128) and pred.scores.shape == (3, 96, 128)
    assert pred.panoptic.dtype == np.int32
    seg_dict = pred.segments[0]
    assert {"id", "class_id", "is_thing", "score", "area"} <= set(seg_dict.as_dict())
    assert seg_dict["class_id"] in (0, 1, 2)
    assert pred.vocabulary == ("person", "sofa, couch", "floor")
    assert sum(s.area for s in pred.segments) == (pred.panoptic > 0).sum()


def test_load_from_yaml_path(tmp_path, rgb_frame):
    cfg = yaml.safe_load(TINY_CONFIG_PATH.read_text())
    cfg["text_cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"ovseg_node": {"ros__parameters": cfg}}))  # a ROS params file
    seg = load_segmenter(str(path))
    assert seg.config["proxyclip.crop_size"] == 112
    assert seg.predict(rgb_frame).semantic.shape == (96, 128)


def test_same_weights_same_result_across_loads(tiny_config, rgb_frame):
    a = load_segmenter(tiny_config).predict(rgb_frame, scores=True)
    b = load_segmenter(tiny_config).predict(rgb_frame, scores=True)
    np.testing.assert_array_equal(a.scores, b.scores)     # seeded random init


def test_random_init_does_not_touch_global_rng(tiny_config):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_segmenter(tiny_config)
    torch.testing.assert_close(torch.rand(3), expected)


def test_bad_vocabulary_keeps_the_old_one(tiny_segmenter):
    tiny_segmenter.set_vocabulary(["a", "b"])
    version = tiny_segmenter.vocabulary.version
    # each request breaks one rule, and must be refused for that rule
    for bad, rule in (([], "the vocabulary is empty"),
                      (["a", "A"], r"class 1 \('A'\) duplicates class 0"),
                      (["ok", ""], "class 1 is empty"),
                      ("person", "not one string")):
        with pytest.raises(VocabularyError, match=rule):
            tiny_segmenter.set_vocabulary(bad)
    assert tiny_segmenter.vocabulary.names == ("a", "b")
    assert tiny_segmenter.vocabulary.version == version


def test_vocabulary_change_reaches_next_prediction(tiny_segmenter, rgb_frame):
    tiny_segmenter.set_vocabulary(["x", "y", "z", "w"])
    pred = tiny_segmenter.predict(rgb_frame, scores=True)
    assert pred.scores.shape[0] == 4 and pred.vocabulary == ("x", "y", "z", "w")
    assert pred.vocabulary_version == tiny_segmenter.vocabulary.version


def test_is_thing_flags_drive_the_panoptic_output(tiny_segmenter, rgb_frame):
    tiny_segmenter.set_vocabulary(["wall", "floor"], is_thing=[False, False])
    pred = tiny_segmenter.predict(rgb_frame)
    assert all(not s.is_thing for s in pred.segments)
    assert len(pred.segments) == len(np.unique(pred.semantic))    # one segment per stuff class


def test_bad_images_are_rejected(tiny_segmenter):
    for bad, msg in ((np.zeros((10, 10), np.uint8), "HxWx3"),
                     (np.zeros((10, 10, 3), np.float32), "uint8"),
                     (np.zeros((0, 10, 3), np.uint8), "empty"),
                     ([[1, 2, 3]], "numpy")):
        with pytest.raises(InputError, match=msg):
            tiny_segmenter.predict(bad)


def test_runtime_settings(tiny_segmenter):
    cfg = tiny_segmenter.update_config(prob_thd=0.3, proxyclip__min_thing_area=5)
    assert cfg["prob_thd"] == 0.3 and tiny_segmenter.engine.cfg["proxyclip.min_thing_area"] == 5
    with pytest.raises(ConfigError, match="cannot change at runtime"):
        tiny_segmenter.update_config(proxyclip__crop_size=224)
    with pytest.raises(ConfigError, match="unknown"):
        tiny_segmenter.update_config(not_a_key=1)


def test_describe(tiny_segmenter):
    info = tiny_segmenter.describe()
    assert info["engine"] == "proxyclip" and info["random_weights"] is True
    assert info["model"]["clip_model"] == "ovseg-tiny-ViT" and info["num_classes"] == 10
    assert "random" in info["weights"]["clip"] and "random" in info["weights"]["vfm"]
    assert info["backends"]["image"]["backend"] == "torch"


def test_vocabulary_swap_during_predictions_is_safe(tiny_segmenter, rgb_frame):
    errors = []

    def swap():
        try:
            for i in range(3):
                tiny_segmenter.set_vocabulary([f"c{i}", "d", "e"][: 2 + i % 2])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=swap)
    t.start()
    for _ in range(3):
        pred = tiny_segmenter.predict(rgb_frame, scores=True)
        assert pred.scores.shape[0] == len(pred.vocabulary)    # one consistent vocabulary
    t.join()
    assert not errors


# --- weights --------------------------------------------------------------------------------------
def test_missing_checkpoint_file_is_one_clear_error(tiny_config, tmp_path):
    cfg = dict(tiny_config, random_init=False,
               **{"proxyclip.clip_checkpoint": str(tmp_path / "nope.safetensors")})
    with pytest.raises(WeightsError) as info:
        load_segmenter(cfg)
    msg = str(info.value)
    assert "nope.safetensors" in msg and "ovseg-tiny-ViT" in msg
    assert "proxyclip.clip_checkpoint" in msg and "random_init" in msg


def test_missing_vfm_file_names_its_key(tiny_config, tmp_path):
    import open_clip
    from safetensors.torch import save_file

    from ovseg_ros.testing.tiny_models import TINY_CLIP_MODEL

    torch.manual_seed(0)
    clip = open_clip.create_model(TINY_CLIP_MODEL)
    save_file(clip.state_dict(), str(tmp_path / "clip.safetensors"))
    cfg = dict(tiny_config, random_init=False, weights_dir=str(tmp_path),
               **{"proxyclip.clip_checkpoint": "clip.safetensors",      # relative: weights_dir
                  "proxyclip.vfm_checkpoint": "dino.safetensors"})
    with pytest.raises(WeightsError, match="proxyclip.vfm_checkpoint"):
        load_segmenter(cfg)


def test_checkpoint_files_load_and_are_not_random(tiny_config, tmp_path, rgb_frame):
    """Weights from local files (safetensors for CLIP, a weights_only torch file for the VFM)
    reproduce the random model they were saved from, with random_weights False."""
    from safetensors.torch import save_file

    ref = load_segmenter(tiny_config)
    save_file(ref.engine.clip_model.state_dict(), str(tmp_path / "clip.safetensors"))
    torch.save(ref.engine.image_model.vfm.vit.state_dict(), tmp_path / "vfm.pth")
    cfg = dict(tiny_config, random_init=False,
               **{"proxyclip.clip_checkpoint": str(tmp_path / "clip.safetensors"),
                  "proxyclip.vfm_checkpoint": str(tmp_path / "vfm.pth")})
    seg = load_segmenter(cfg)
    assert seg.random_weights is False
    pred = seg.predict(rgb_frame, scores=True)
    assert pred.random_weights is False
    np.testing.assert_allclose(pred.scores, ref.predict(rgb_frame, scores=True).scores, atol=1e-6)
    assert "file:" in seg.engine.text_encoder_id()


def test_wrong_checkpoint_contents_are_reported(tiny_config, tmp_path):
    from safetensors.torch import save_file

    save_file({"bogus": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    cfg = dict(tiny_config, random_init=False,
               **{"proxyclip.clip_checkpoint": str(tmp_path / "bad.safetensors")})
    with pytest.raises(WeightsError, match="cannot load CLIP checkpoint"):
        load_segmenter(cfg)


def test_unknown_models_are_config_errors(tiny_config):
    with pytest.raises(ConfigError, match="proxyclip.clip_model"):
        load_segmenter(dict(tiny_config, **{"proxyclip.clip_model": "ViT-X-99"}))
    with pytest.raises(ConfigError, match="proxyclip.vfm_model"):
        load_segmenter(dict(tiny_config, **{"proxyclip.vfm_model": "no_such_vit"}))


def test_non_vit_clip_is_rejected(tiny_config):
    with pytest.raises(ConfigError, match="VisionTransformer"):
        load_segmenter(dict(tiny_config, **{"proxyclip.clip_model": "RN50"}))


def test_pretrained_tag_offline_is_one_clear_error(tmp_path):
    """A timm pretrained tag that is not in the (empty) Hugging Face cache, offline: the
    error names the model, the keys to change and random_init. Runs in a subprocess so
    HF_HUB_OFFLINE and an empty HF_HOME take effect."""
    import subprocess
    import sys

    import open_clip
    from safetensors.torch import save_file

    import ovseg_ros.testing.tiny_models  # noqa: F401  (registers ovseg-tiny-ViT)

    torch.manual_seed(0)
    save_file(open_clip.create_model("ovseg-tiny-ViT").state_dict(),
              str(tmp_path / "clip.safetensors"))
    code = (
        "from ovseg_ros import load_segmenter\n"
        "from ovseg_ros.weights import WeightsError\n"
        "try:\n"
        f"    load_segmenter({{'random_init': False, 'text_cache_dir': '',"
        f" 'proxyclip.clip_model': 'ovseg-tiny-ViT',"
        f" 'proxyclip.clip_checkpoint': {str(tmp_path / 'clip.safetensors')!r},"
        f" 'proxyclip.vfm_model': 'vit_small_patch16_224.dino'}})\n"
        "except WeightsError as exc:\n"
        "    print('WEIGHTS-ERROR', exc)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120, cwd=str(TINY_CONFIG_PATH.parents[2]))
    assert "WEIGHTS-ERROR" in out.stdout, out.stderr[-2000:]
    msg = out.stdout
    assert "vit_small_patch16_224.dino" in msg and "proxyclip.vfm_checkpoint" in msg
    assert "random_init" in msg
