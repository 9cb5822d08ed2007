"""ovseg-weights: convert -> verify round trips, its errors, safe pickle handling, bundles,
and what `list` / `fetch` report. Released files are written with random weights in the
released layouts (detectron2's {"model": state_dict} with training-only keys) for the
tiny configs; nothing is downloaded."""
from __future__ import annotations

import json
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from ovseg_ros.config import make_config
from ovseg_ros.registry import get_engine
from ovseg_ros.tools.weights_cli import main
from ovseg_ros.weights.files import manifest_path

TINY = {
    "fcclip": {"engine": "fcclip", "fcclip.clip_model": "ovseg-tiny-ConvNeXt",
               "fcclip.clip_pretrained": "", "fcclip.short_side": 64, "fcclip.max_size": 128},
    "maftplus": {"engine": "maftplus", "maftplus.clip_model": "ovseg-tiny-ConvNeXt",
                 "maftplus.clip_pretrained": "", "maftplus.short_side": 64,
                 "maftplus.max_size": 96},
    "ovseg": {"engine": "ovseg", "ovseg.swin_model": "ovseg_tiny_swin", "ovseg.head_size": "tiny",
              "ovseg.clip_model": "ovseg-tiny-ViT-14"},
}
# training state a released file carries besides the inference keys (dropped by convert)
TRAINING_KEYS = {
    "fcclip": {"criterion.empty_weight": (134,), "backbone.clip_model.logit_scale": ()},
    "maftplus": {"criterion.empty_weight": (134,), "backbone_t.clip_model.logit_scale": (),
                 "backbone.clip_model.token_embedding.weight": (8, 4)},
    "ovseg": {"criterion.empty_weight": (172,)},
}


def _engines():
    out = ["fcclip", "maftplus"]
    try:   # the OVSeg engine implements the same two methods (docs/architecture.md)
        cls = get_engine("ovseg")
        if hasattr(cls, "checkpoint_layout"):
            out.append("ovseg")
    except (KeyError, ImportError):
        pass
    return out


def _cfg_file(tmp_path: Path, engine: str, **extra) -> Path:
    path = tmp_path / f"{engine}_tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY[engine], **extra}))
    return path


def _layout(engine: str) -> dict:
    return get_engine(engine).checkpoint_layout(make_config(TINY[engine]))


def _released(engine: str, path: Path, drop=(), add=None, reshape=None) -> dict:
    """A random-weight file in the released layout: every inference key (minus ``drop``,
    plus ``add``; ``reshape`` changes one key's shape) and training-only keys."""
    gen = torch.Generator().manual_seed(0)
    shapes = dict(_layout(engine))
    shapes.update(TRAINING_KEYS[engine])
    if reshape:
        shapes[reshape] = tuple(s + 1 for s in shapes[reshape]) or (2,)
    shapes.update(add or {})
    sd = {k: (torch.randn(s, generator=gen) * 0.02).half() for k, s in shapes.items()
          if k not in drop}
    torch.save({"model": sd, "iteration": 5, "__author__": "test"}, path)
    return sd


@pytest.mark.parametrize("engine", _engines())
def test_convert_verify_round_trip(engine, tmp_path, capsys):
    src, dst = tmp_path / "released.pth", tmp_path / f"{engine}.safetensors"
    sd = _released(engine, src)
    rc = main(["convert", str(src), str(dst), "--engine", engine,
               "--config", str(_cfg_file(tmp_path, engine))])
    assert rc == 0, capsys.readouterr()
    manifest = json.loads(manifest_path(dst).read_text())
    layout = _layout(engine)
    assert manifest["engine"] == engine and manifest["keys"] == len(layout)
    assert manifest["skipped_keys"] == len(TRAINING_KEYS[engine])
    assert manifest["source"]["file"] == "released.pth" and len(manifest["sha256"]) == 64
    from safetensors.torch import load_file

    out = load_file(str(dst))
    assert set(out) == set(layout)
    assert all(torch.equal(out[k], sd[k]) for k in out)   # values and dtype kept
    capsys.readouterr()
    assert main(["verify", str(dst)]) == 0
    assert "1 ok, 0 failed" in capsys.readouterr().out
    assert main(["verify", str(tmp_path)]) == 0            # a folder of converted files


def test_converted_file_loads_in_the_engine(tmp_path):
    """The engine's strict loading uses the same layout as convert: the converted file loads
    (and the released .pth itself too, its training keys skipped)."""
    import open_clip

    from ovseg_ros.engines.fcclip import FCClipEngine

    src, dst = tmp_path / "fcclip_cocopan.pth", tmp_path / "fcclip_cocopan.safetensors"
    sd = _released("fcclip", src)
    assert main(["convert", str(src), str(dst), "--engine", "fcclip"]
                + ["--config", str(_cfg_file(tmp_path, "fcclip"))]) == 0
    clip = open_clip.create_model("ovseg-tiny-ConvNeXt", pretrained=None)
    save_file(clip.state_dict(), str(tmp_path / "clip.safetensors"))
    for head_file in (dst, src):
        cfg = make_config({**TINY["fcclip"], "fcclip.clip_checkpoint": "clip.safetensors",
                           "fcclip.checkpoint": head_file.name, "weights_dir": str(tmp_path),
                           "text_cache_dir": "", "num_threads": 1})
        engine = FCClipEngine(cfg)
        got = engine.head.state_dict()
        assert all(torch.equal(got[k], sd[k].float()) for k in got)


@pytest.mark.parametrize("case", ["missing", "extra", "shape"])
def test_convert_names_each_layout_error(case, tmp_path, capsys):
    layout = _layout("fcclip")
    key = "sem_seg_head.predictor.query_feat.weight"
    assert key in layout
    src = tmp_path / "bad.pth"
    extra_key = "sem_seg_head.predictor.class_embed_old.weight"
    _released("fcclip", src, drop=(key,) if case == "missing" else (),
              add={extra_key: (3,)} if case == "extra" else None,
              reshape=key if case == "shape" else None)
    out_file = tmp_path / "out.safetensors"
    rc = main(["convert", str(src), str(out_file), "--engine", "fcclip",
               "--config", str(_cfg_file(tmp_path, "fcclip"))])
    err = capsys.readouterr().err
    assert rc == 1 and not out_file.exists()
    expected = {"missing": f"missing keys (1): {key}",
                "extra": f"unexpected keys (1): {extra_key}",
                "shape": f"shape mismatches (1): {key}: checkpoint"}[case]
    assert expected in err, err
    for other in ({"missing", "extra", "shape"} - {case}):
        assert {"missing": "missing keys", "extra": "unexpected keys",
                "shape": "shape mismatches"}[other] not in err


def _converted(tmp_path, capsys) -> Path:
    src, dst = tmp_path / "released.pth", tmp_path / "fcclip.safetensors"
    _released("fcclip", src)
    assert main(["convert", str(src), str(dst), "--engine", "fcclip",
                 "--config", str(_cfg_file(tmp_path, "fcclip"))]) == 0
    capsys.readouterr()
    return dst


def test_verify_finds_a_corrupted_byte(tmp_path, capsys):
    dst = _converted(tmp_path, capsys)
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0x01           # one bit, inside the tensor data
    dst.write_bytes(bytes(data))
    assert main(["verify", str(dst)]) == 1
    out = capsys.readouterr().out
    assert "sha256 mismatch" in out and "FAIL" in out
    assert "missing keys" not in out       # the keys themselves are intact


def test_verify_checks_keys_against_the_engine(tmp_path, capsys):
    """A file whose manifest matches it (hash, key count) but whose keys no longer fit the
    engine: verify says which keys."""
    from ovseg_ros.weights.files import sha256_of

    dst = _converted(tmp_path, capsys)
    from safetensors.torch import load_file

    sd = load_file(str(dst))
    del sd["void_embedding.weight"]
    save_file(sd, str(dst))
    m = json.loads(manifest_path(dst).read_text())
    m.update(sha256=sha256_of(dst), size=dst.stat().st_size, keys=len(sd))
    manifest_path(dst).write_text(json.dumps(m))
    assert main(["verify", str(dst)]) == 1
    out = capsys.readouterr().out
    assert "engine 'fcclip': missing keys (1): void_embedding.weight" in out
    assert "sha256 mismatch" not in out


def test_verify_without_manifest_and_of_a_pth(tmp_path, capsys):
    dst = _converted(tmp_path, capsys)
    manifest_path(dst).unlink()
    assert main(["verify", str(dst)]) == 1
    assert "no manifest" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "released.pth")]) == 1
    assert "not a converted file" in capsys.readouterr().out


class _Evil:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_malicious_pickle_is_never_executed(kind, tmp_path, capsys):
    marker = tmp_path / "EXECUTED"
    src = tmp_path / "fcclip_cocopan.pth"
    payload = {"model": {"void_embedding.weight": torch.zeros(1, 32), "x": _Evil(marker)}}
    if kind == "torch":
        torch.save(payload, src)
    else:
        src.write_bytes(pickle.dumps(payload))
    cfg = _cfg_file(tmp_path, "fcclip", **{"fcclip.checkpoint": src.name,
                                           "weights_dir": str(tmp_path)})
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--engine", "fcclip",
                 "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "needs full unpickling" in err and "system" in err and "--trust-pickle" in err
    assert main(["verify", str(src)]) == 1
    assert main(["list", str(cfg)]) == 0
    assert main(["pack", str(cfg), str(tmp_path / "b.tar")]) == 1   # the CLIP is missing
    clip = tmp_path / "clip.safetensors"
    clip.write_bytes(b"")
    cfg2 = _cfg_file(tmp_path, "fcclip", **{"fcclip.checkpoint": src.name,
                                            "fcclip.clip_checkpoint": clip.name,
                                            "weights_dir": str(tmp_path)})
    assert main(["pack", str(cfg2), str(tmp_path / "b.tar")]) == 1   # convert refuses it
    assert "needs full unpickling" in capsys.readouterr().err
    # and the engine's own loader (weights_only=True)
    from ovseg_ros.models.checkpoint import load_reference_checkpoint
    from ovseg_ros.weights import WeightsError

    with pytest.raises(WeightsError, match="weights_only"):
        load_reference_checkpoint(src, torch.nn.Linear(1, 1), torch.nn.Linear(1, 1),
                                  setting="fcclip.checkpoint", layout={},
                                  is_inference_key=lambda key: True)
    assert not marker.exists()


def test_numpy_arrays_convert_without_trusting_the_pickle(tmp_path, capsys):
    """detectron2 files often hold numpy arrays: rebuilt from bytes, no code runs."""
    src = tmp_path / "released.pkl"
    sd = _released("fcclip", tmp_path / "tmp.pth")
    src.write_bytes(pickle.dumps({"model": {k: v.float().numpy() for k, v in sd.items()}}))
    dst = tmp_path / "np.safetensors"
    assert main(["convert", str(src), str(dst), "--engine", "fcclip",
                 "--config", str(_cfg_file(tmp_path, "fcclip"))]) == 0, capsys.readouterr()
    assert main(["verify", str(dst)]) == 0


def _fake_hf_file(cache: Path, repo_id: str, filename: str, data: bytes = b"x") -> Path:
    """A file in huggingface_hub's cache layout: refs/main -> snapshots/<rev>/<file>, a
    link to blobs/<sha256> (how the cache stores Git LFS files)."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).symlink_to(os.path.relpath(blob, snap))
    return snap / filename


def test_list_marks_present_and_missing(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    _fake_hf_file(cache, "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors")
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "small.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "engine": "proxyclip", "proxyclip": {"clip_model": "ViT-B-16", "clip_pretrained": "openai",
                                             "vfm_model": "vit_small_patch8_224.dino"}}}}))
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "fcclip_cocopan.pth").write_bytes(b"x")
    (presets / "fc.yaml").write_text(yaml.safe_dump({
        "engine": "fcclip", "weights_dir": str(weights),
        "fcclip.checkpoint": "fcclip_cocopan.pth"}))
    assert main(["list", "--config-dir", str(presets), "small", "fc"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()

    def mark(text):
        return next(line for line in lines if text in line).split("]")[0] + "]"

    assert mark("ViT-B-16 / openai") == "  [present]"
    import hashlib

    # a present file's size and, from the cache's blob name, its SHA-256
    assert f"(1 bytes, {hashlib.sha256(b'x').hexdigest()})" in out
    assert mark("vit_small_patch8_224.dino [") == "  [MISSING]"
    assert mark("fcclip_cocopan.pth (FC-CLIP") == "  [present]"
    assert mark("convnext_large_d_320 / laion2b") == "  [MISSING]"
    assert "1-91PIns86vyNaL3CzMmDD39zKGnPMtvj" in out   # where FC-CLIP publishes it
    assert str(cache) in out
    assert main(["list", "--config-dir", str(presets), "--strict", "small"]) == 1


def test_fetch_offline_says_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fetch", "jetson_small"]) == 1
    out = capsys.readouterr().out
    assert "offline (HF_HUB_OFFLINE is set)" in out
    assert "ViT-B-16 / openai" in out and "vit_small_patch8_224.dino" in out
    # without the variable, a probe of the endpoint that refuses at once
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert main(["fetch", "jetson_small"]) == 1
    assert "offline (cannot reach 127.0.0.1:9" in capsys.readouterr().out
    assert main(["fetch", "demo_tiny"]) == 0           # random weights: nothing to fetch


def test_pack_takes_cached_open_clip_and_timm_weights(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    clip = _fake_hf_file(cache, "timm/vit_base_patch16_clip_224.openai",
                         "open_clip_model.safetensors", b"clip weights")
    _fake_hf_file(cache, "timm/vit_small_patch8_224.dino", "model.safetensors", b"dino")
    assert main(["pack", "jetson_small", str(tmp_path / "b.tar")]) == 0, capsys.readouterr()
    dest = tmp_path / "robot"
    assert main(["unpack", str(tmp_path / "b.tar"), str(dest)]) == 0, capsys.readouterr()
    cfg = make_config(dest / "config.yaml")
    assert cfg["proxyclip.clip_checkpoint"] == "weights/clip/ViT-B-16.openai.safetensors"
    assert cfg["proxyclip.vfm_checkpoint"] == \
        "weights/vfm/vit_small_patch8_224.dino.safetensors"
    assert (dest / cfg["proxyclip.clip_checkpoint"]).read_bytes() == clip.read_bytes()
    assert cfg["engine"] == "proxyclip" and cfg["proxyclip.short_side"] == 224   # the preset
    bundle = json.loads((dest / "ovseg_bundle.json").read_text())
    assert {e["kind"] for e in bundle["files"]} == {"open_clip", "timm"}
    # a changed file in the unpacked bundle fails verify
    (dest / cfg["proxyclip.vfm_checkpoint"]).write_bytes(b"dinO")
    capsys.readouterr()
    assert main(["verify", str(dest)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out


def _fcclip_preset(tmp_path: Path) -> Path:
    """A tiny FC-CLIP preset with real (random-valued) files: a local CLIP file and the
    released head checkpoint in weights_dir."""
    import open_clip

    weights = tmp_path / "weights"
    weights.mkdir()
    clip = open_clip.create_model("ovseg-tiny-ConvNeXt", pretrained=None)
    save_file(clip.state_dict(), str(weights / "tiny_clip.safetensors"))
    _released("fcclip", weights / "fcclip_cocopan.pth")
    preset = tmp_path / "robot.yaml"
    preset.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        **{k: v for k, v in TINY["fcclip"].items()}, "random_init": False,
        "weights_dir": str(weights), "fcclip.clip_checkpoint": "tiny_clip.safetensors",
        "fcclip.checkpoint": "fcclip_cocopan.pth", "fcclip.overlap_threshold": 0.0,
        "device": "cpu", "precision": "fp32", "num_threads": 1,
        "vocabulary": ["person", "sky", "floor"]}}}))
    return preset


def test_pack_unpack_and_the_node_starts_offline(tmp_path, monkeypatch, capsys):
    pytest.importorskip("rclpy")
    pytest.importorskip("ovseg_ros.msg")
    tar_path = tmp_path / "bundle.tar"
    assert main(["pack", str(_fcclip_preset(tmp_path)), str(tar_path)]) == 0, \
        capsys.readouterr()
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
    assert {"ovseg_bundle.json", "config.yaml", "weights/fcclip_cocopan.safetensors",
            "weights/fcclip_cocopan.safetensors.manifest.json",
            "weights/clip/tiny_clip.safetensors"} <= names
    dest = tmp_path / "robot"
    assert main(["unpack", str(tar_path), str(dest)]) == 0, capsys.readouterr()
    assert main(["verify", str(dest)]) == 0
    capsys.readouterr()
    cfg = make_config(dest / "config.yaml")
    assert cfg["weights_dir"] == str(dest.resolve())
    assert cfg["fcclip.checkpoint"] == "weights/fcclip_cocopan.safetensors"

    from node_harness import Client, NodeUnderTest
    from ovseg_ros.config import read_config_file
    from ovseg_ros.msg import Vocabulary

    # no cached weights and no way out: anything reaching for the network fails
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    params = {k: v for k, v in _flat(read_config_file(dest / "config.yaml")).items()}
    params["diagnostics_period"] = 0.5
    node = NodeUnderTest(tmp_path, params, namespace="/bundle")
    client = Client("/bundle")
    try:
        vocab = client.latched(Vocabulary, "vocabulary", node, timeout=180)
        assert vocab.engine == "fcclip" and not vocab.random_weights
        assert [c.name for c in vocab.classes] == ["person", "sky", "floor"]
        assert node.alive()
    finally:
        client.close()
        node.stop()


def _flat(raw: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_unpack_refuses_what_is_not_a_bundle(tmp_path, capsys):
    bad = tmp_path / "x.tar"
    with tarfile.open(bad, "w") as tar:
        f = tmp_path / "a.txt"
        f.write_text("a")
        tar.add(f, arcname="a.txt")
    assert main(["unpack", str(bad), str(tmp_path / "d")]) == 1
    assert "not a weights bundle" in capsys.readouterr().err


def test_architecture_without_weights_is_quiet_and_leaves_the_root_logger(caplog):
    """open_clip's "initialized randomly" warning is dropped while an architecture is built
    (its weights come later), by a filter: the root logger's level is never changed, and
    other records still pass."""
    import logging

    from ovseg_ros.weights import clip_architecture

    root = logging.getLogger()
    level = root.level
    with caplog.at_level(logging.WARNING):
        model = clip_architecture("ovseg-tiny-ViT", key_prefix="ovseg", meta=False)
        logging.warning("a record of someone else")
    assert root.level == level and not root.filters
    assert next(model.parameters()).device.type == "cpu"
    messages = [r.getMessage() for r in caplog.records]
    assert "a record of someone else" in messages
    assert not [m for m in messages if "initialized randomly" in m]
