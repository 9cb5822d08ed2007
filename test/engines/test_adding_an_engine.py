"""Adding an engine touches no file of the package (docs/architecture.md, "Adding an engine").

A fifth engine lives in this test folder (toy_engine.py and its config module
toy_engine_config.py). A fresh interpreter finds it through an installed package's
``ovseg_ros.engines`` entry point (a dist-info folder in a temporary directory), and it runs
through everything the four built-in engines run through: the schema and its own config
check, ``load_segmenter`` with random weights and with weight files, ``predict``, one
``describe()`` shape, the weights tool's needs (its release matched, present and missing
files) and ``convert`` with the engine's own layout and key filter.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    out = {}
    from ovseg_ros import ConfigError, load_segmenter, make_config
    from ovseg_ros.config import AUTO_LOW_PRECISION, ENGINES, SCHEMA
    out["engines"] = list(ENGINES)
    out["toy_keys"] = sorted(k for k in SCHEMA if k.startswith("toy."))
    out["auto"] = AUTO_LOW_PRECISION["toy"]
    try:
        make_config({"engine": "toy", "toy.clip_pretrained": "x", "toy.clip_checkpoint": "y"})
    except ConfigError as exc:
        out["own_check"] = str(exc)
    tmp = sys.argv[1]
    base = {"engine": "toy", "text_cache_dir": "", "weights_dir": tmp}
    rgb = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)

    seg = load_segmenter(dict(base, random_init=True))
    seg.set_vocabulary(["red", "green", "blue"])
    pred = seg.predict(rgb, scores=True)
    out["random"] = {"engine": pred.engine, "random": pred.random_weights,
                     "labels": sorted(set(pred.semantic.ravel().tolist())),
                     "scores": list(pred.scores.shape), "segments": len(pred.segments),
                     "describe": seg.describe()}

    # weight files: the tiny CLIP saved as a local checkpoint, the head as a released file
    # (its name is the engine's release) with a training-only key that convert drops
    import open_clip
    from safetensors.torch import save_file
    clip = open_clip.create_model("ovseg-tiny-ViT", pretrained=None)
    torch.save(clip.state_dict(), f"{tmp}/clip.pt")
    dim = int(clip.text_projection.shape[-1])
    torch.manual_seed(1)
    head = {"head.weight": torch.randn(dim, dim), "head.bias": torch.randn(dim),
            "criterion.weight": torch.ones(3)}
    torch.save(head, f"{tmp}/toy_head.pth")
    files = dict(base, **{"toy.clip_checkpoint": "clip.pt", "toy.checkpoint": "toy_head.pth"})
    seg = load_segmenter(files)
    seg.set_vocabulary(["red", "green", "blue"])
    out["files"] = {"labels": sorted(set(seg.predict(rgb).semantic.ravel().tolist())),
                    "describe": seg.describe()}
    try:
        load_segmenter(dict(base))
    except Exception as exc:
        out["no_checkpoint"] = f"{type(exc).__name__}: {exc}"

    from ovseg_ros.weights.needs import requirements
    out["needs"] = [dict(kind=n.kind, setting=n.setting, present=n.present,
                         release=n.release.name if n.release else None)
                    for n in requirements(make_config(files))]
    missing = dict(files, **{"toy.clip_checkpoint": "absent.pt"})
    out["needs_missing"] = [(n.setting, n.present) for n in requirements(make_config(missing))]

    from ovseg_ros.weights.convert import convert
    manifest = convert(f"{tmp}/toy_head.pth", f"{tmp}/toy_head.safetensors", "toy",
                       say=lambda s: None)
    out["convert"] = {"keys": manifest["keys"], "skipped": manifest["skipped_keys"]}
    print("RESULT " + json.dumps(out, default=str))
""")


def _install_entry_point(site: Path) -> None:
    """What ``pip install`` of a package declaring the engine would leave: its dist-info."""
    dist = site / "ovseg_toy_engine-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ovseg-toy-engine\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text("[ovseg_ros.engines]\ntoy = toy_engine\n")


def test_a_fifth_engine_runs_through_the_segmenter_the_weights_tool_and_describe(tmp_path):
    site = tmp_path / "site"
    _install_entry_point(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {"PYTHONPATH": f"{ROOT}:{HERE}:{site}", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    proc = subprocess.run([sys.executable, "-c", _RUN, str(work)], capture_output=True,
                          text=True, cwd=str(tmp_path), env=env, timeout=600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT "):])

    # the schema: the engine's choices and its group, its own check and auto precision
    assert out["engines"] == ["fcclip", "maftplus", "ovseg", "proxyclip", "toy"]
    assert out["toy_keys"] == ["toy.checkpoint", "toy.clip_checkpoint", "toy.clip_model",
                               "toy.clip_pretrained", "toy.input_size", "toy.logit_scale"]
    assert out["auto"] is False
    assert "'toy.clip_pretrained' and 'toy.clip_checkpoint' are both set" in out["own_check"]

    # load_segmenter with random weights: one label for the whole frame, scores K x H x W
    rnd = out["random"]
    assert rnd["engine"] == "toy" and rnd["random"] is True
    assert len(rnd["labels"]) == 1 and rnd["labels"][0] in (0, 1, 2)
    assert rnd["scores"] == [3, 40, 56] and rnd["segments"] == 1
    # describe(): the shape every engine has
    info = rnd["describe"]
    assert set(info) == {"engine", "device", "precision", "backend", "stage_precision",
                         "random_weights", "model", "weights", "text_encoder", "backends",
                         "num_classes"}
    assert info["model"] == {"clip_model": "ovseg-tiny-ViT", "input_size": 64}
    assert info["weights"]["head"] == "random:0" and "random" in info["weights"]["clip"]
    assert info["backends"]["image"]["backend"] == "torch" and info["num_classes"] == 3

    # weight files: the builder checked them, the engine read them
    files = out["files"]["describe"]
    assert files["random_weights"] is False
    assert files["weights"]["head"].startswith("file:")
    assert files["weights"]["clip"].startswith("ovseg-tiny-ViT|file:")
    assert "WeightsError: no toy checkpoint given: set the config key 'toy.checkpoint' to " \
           "toy_head.pth (see test/engines/toy_engine.py" in out["no_checkpoint"]

    # the weights tool asked the engine: its declared files, its release matched by name
    assert out["needs"] == [
        {"kind": "file", "setting": "toy.clip_checkpoint", "present": True, "release": None},
        {"kind": "released", "setting": "toy.checkpoint", "present": True,
         "release": "toy_head.pth"}]
    assert out["needs_missing"] == [["toy.clip_checkpoint", False], ["toy.checkpoint", True]]
    # convert: the engine's layout and key filter (the training-only key dropped)
    assert out["convert"] == {"keys": 2, "skipped": 1}


def test_the_package_names_no_such_engine():
    """The toy engine needed no line in ovseg_ros: the package never names it."""
    named = [str(p.relative_to(ROOT)) for p in (ROOT / "ovseg_ros").rglob("*.py")
             if "toy_engine" in p.read_text() or '"toy"' in p.read_text()]
    assert not named, named
