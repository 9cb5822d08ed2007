"""The one config schema (ovseg_ros/config.py): validation, file forms, clear errors."""
from __future__ import annotations

import pytest
import yaml

from ovseg_ros import ConfigError, load_segmenter, make_config
from ovseg_ros.config import SCHEMA, engine_keys

from conftest import TINY_CONFIG_PATH


def test_defaults_are_complete_and_valid():
    cfg = make_config()
    assert set(cfg.as_dict()) == set(SCHEMA)
    assert cfg["engine"] == "proxyclip" and cfg["proxyclip.crop_size"] == 336
    assert cfg["proxyclip.stride"] == 112 and cfg["proxyclip.beta"] == 1.2
    assert cfg["proxyclip.gamma"] == 3.0 and cfg["proxyclip.logit_scale"] == 40.0


def test_unknown_key_names_the_key_and_a_suggestion():
    with pytest.raises(ConfigError) as info:
        make_config({"proxyclip": {"crop_sise": 224}})
    msg = str(info.value)
    assert "proxyclip.crop_sise" in msg and "proxyclip.crop_size" in msg


def test_unknown_key_stops_load_segmenter(tiny_config):
    with pytest.raises(ConfigError, match="unknown config key"):
        load_segmenter(dict(tiny_config, colour="red"))


@pytest.mark.parametrize("key,value,msg", [
    ("proxyclip.crop_size", "big", "must be an integer"),
    ("proxyclip.crop_size", 8, ">= 16"),
    ("precision", "int4", "must be one of"),
    ("random_init", "yes", "true or false"),
    ("vocabulary", "person", "list of strings"),
    ("prob_thd", 1.5, "<= 1.0"),
])
def test_bad_values_are_named(key, value, msg):
    with pytest.raises(ConfigError, match=msg) as info:
        make_config({key: value})
    assert key in str(info.value)


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="stride"):
        make_config({"proxyclip.crop_size": 112, "proxyclip.stride": 200})
    with pytest.raises(ConfigError, match="custom_templates is empty"):
        make_config(prompt_templates="custom")
    with pytest.raises(ConfigError, match="exactly one"):
        make_config(prompt_templates="custom", custom_templates=["no placeholder"])


def test_nested_and_dotted_forms_are_equal():
    a = make_config({"proxyclip": {"crop_size": 224, "stride": 112}})
    b = make_config({"proxyclip.crop_size": 224, "proxyclip.stride": 112})
    c = make_config(proxyclip__crop_size=224, proxyclip__stride=112)
    assert a == b == c


def test_yaml_files(tmp_path):
    cfg = make_config(TINY_CONFIG_PATH)
    assert cfg["proxyclip.clip_model"] == "ovseg-tiny-ViT" and cfg["random_init"] is True
    ros = tmp_path / "ros.yaml"
    ros.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"proxyclip.stride": 56}}}))
    assert make_config(ros)["proxyclip.stride"] == 56
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        make_config(bad)
    unsafe = tmp_path / "unsafe.yaml"
    marker = tmp_path / "EXECUTED"
    unsafe.write_text(f"engine: !!python/object/apply:os.system ['touch {marker}']\n")
    # safe_load constructs no objects: the tag itself is refused, by name (an unsafe loader
    # would run the command and then fail on engine: 0, a different error)
    with pytest.raises(ConfigError, match="not valid YAML.*python/object/apply:os.system"):
        make_config(unsafe)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="cannot read"):
        make_config(tmp_path / "missing.yaml")


def test_replace_revalidates():
    cfg = make_config()
    assert cfg.replace(prob_thd=0.5)["prob_thd"] == 0.5
    with pytest.raises(ConfigError):
        cfg.replace(prob_thd=-1.0)


def test_node_only_keys_are_not_engine_keys():
    keys = engine_keys()
    assert "proxyclip.crop_size" in keys and "overlay_alpha" not in keys


def test_auto_precision_resolves_to_what_the_hardware_runs_fast(monkeypatch):
    import ovseg_ros.config as config

    monkeypatch.setattr(config, "cpu_kind", lambda: "amx")
    assert make_config()["precision"] == "bf16"                       # torch on a bf16 CPU
    assert make_config(backend="onnxruntime")["precision"] == "fp32"  # no bf16 CPU kernels
    assert make_config(device="cuda")["precision"] == "fp16"
    assert make_config(device="cuda:1", backend="tensorrt")["precision"] == "fp16"
    assert make_config(precision="fp32")["precision"] == "fp32"       # explicit wins
    monkeypatch.setattr(config, "cpu_kind", lambda: "avx2")
    assert make_config()["precision"] == "fp32"                       # emulated bf16 is slower
    # the resolved value survives a round trip (Config.replace re-validates)
    assert make_config(precision="bf16").replace(prob_thd=0.5)["precision"] == "bf16"
    assert make_config(precision="int8").replace(prob_thd=0.5)["precision"] == "int8"


@pytest.mark.parametrize("kind, want", [("amx", "bf16"), ("avx512_bf16", "bf16"),
                                        ("vnni", "int8"),
                                        ("avx512", "fp32"), ("avx2", "fp32"),
                                        ("unknown", "fp32")])
def test_auto_precision_per_cpu_kind(monkeypatch, caplog, kind, want):
    """ProxyCLIP's pick per CPU kind (the kind injected): native bf16 keeps bf16, AVX-512
    VNNI without native bf16 gets int8, CPUs where neither is measured faster stay fp32;
    the pick is logged with the kind."""
    import logging

    import ovseg_ros.config as config

    monkeypatch.setattr(config, "cpu_kind", lambda: kind)
    with caplog.at_level(logging.INFO, logger=config.__name__):
        assert make_config()["precision"] == want
    assert f"precision auto -> {want} (proxyclip on a {kind} CPU" in caplog.text
    assert make_config(backend="onnxruntime")["precision"] == "fp32"
    assert make_config(device="cuda")["precision"] == "fp16"
    assert config.resolve_auto_precision("cpu", "torch", "proxyclip", kind=kind) == want
    for engine in ("ovseg", "fcclip", "maftplus"):
        assert config.resolve_auto_precision("cpu", "torch", engine, kind=kind) == "fp32"


def test_auto_precision_with_compile_never_picks_eager_int8(monkeypatch, caplog):
    """int8 runs eagerly: a compiled config (config/cpu_realtime.yaml) on a VNNI CPU resolves
    to fp32 and says why, instead of failing at load; other kinds keep their pick."""
    import logging

    import ovseg_ros.config as config

    monkeypatch.setattr(config, "cpu_kind", lambda: "vnni")
    with caplog.at_level(logging.INFO, logger=config.__name__):
        assert make_config(torch_compile=True)["precision"] == "fp32"
    assert "int8 runs eagerly and torch_compile/cuda_graphs is on" in caplog.text
    assert make_config()["precision"] == "int8"
    monkeypatch.setattr(config, "cpu_kind", lambda: "avx512_bf16")
    assert make_config(torch_compile=True)["precision"] == "bf16"


def test_cpu_kind_from_flags():
    from ovseg_ros.config import cpu_kind

    avx2 = {"fpu", "sse2", "avx", "avx2", "fma"}
    avx512 = avx2 | {"avx512f", "avx512bw", "avx512vl"}
    assert cpu_kind(avx512 | {"avx512_vnni", "avx512_bf16"}) == "avx512_bf16"
    assert cpu_kind(avx512 | {"avx512_bf16", "amx_bf16", "amx_int8"}) == "amx"
    assert cpu_kind(avx512 | {"avx512_vnni"}) == "vnni"
    assert cpu_kind(avx512) == "avx512"
    assert cpu_kind(avx2 | {"avx_vnni"}) == "avx2"     # AVX-VNNI (256-bit) is not measured
    assert cpu_kind(None, read=False) == "unknown"
    assert cpu_kind() in ("amx", "avx512_bf16", "vnni", "avx512", "avx2", "unknown")  # here


def test_deprecated_engine_cache_dir_is_read_as_graph_cache_dir(tmp_path):
    with pytest.warns(DeprecationWarning, match="'engine_cache_dir' is deprecated.*"
                                                "'graph_cache_dir'"):
        cfg = make_config({"engine_cache_dir": str(tmp_path)})
    assert cfg["graph_cache_dir"] == str(tmp_path) and "engine_cache_dir" not in cfg.values
    with pytest.raises(ConfigError, match="keep only 'graph_cache_dir'"):
        make_config({"engine_cache_dir": "/a", "graph_cache_dir": "/b"})


@pytest.mark.parametrize("engine", ["ovseg", "fcclip", "maftplus"])
def test_auto_precision_is_fp32_for_engines_whose_labels_move(monkeypatch, engine):
    """OVSeg, FC-CLIP and MAFT+ lose labels in bf16 against fp32 with their parity weights
    (docs/benchmarks/cpu.md): auto keeps them fp32, explicit bf16 still works."""
    import ovseg_ros.config as config

    monkeypatch.setattr(config, "cpu_kind", lambda: "amx")
    assert make_config(engine=engine)["precision"] == "fp32"
    assert make_config(engine=engine, device="cuda")["precision"] == "fp32"
    assert make_config(engine=engine, precision="bf16")["precision"] == "bf16"
    assert make_config(engine="proxyclip")["precision"] == "bf16"


@pytest.mark.parametrize("text,size", [("640x480", (640, 480)), (" 1280X720 ", (1280, 720)),
                                       ("", None), ("  ", None)])
def test_warmup_size_reads_width_by_height_or_nothing(text, size):
    from ovseg_ros.config import parse_frame_size

    assert make_config(warmup_size=text)["warmup_size"] == text
    assert parse_frame_size(text, "warmup_size") == size


@pytest.mark.parametrize("text", ["640", "640x", "x480", "640x480x3", "ax480", "640 x 4a",
                                  "-640x480", "640.0x480", "0x480", "640x0"])
def test_a_bad_warmup_size_is_refused_with_the_form_it_needs(text):
    with pytest.raises(ConfigError, match="warmup_size") as info:
        make_config(warmup_size=text)
    assert ("'WIDTHxHEIGHT'" in str(info.value) or "1.." in str(info.value)), str(info.value)
    with pytest.raises(ConfigError, match="must be a string"):
        make_config(warmup_size=640)


def test_warmup_size_is_checked_against_the_input_limits_where_it_runs():
    from ovseg_ros.config import parse_frame_size

    # a config that lowers the input limits for the API alone stays valid ...
    cfg = make_config(max_input_pixels=1000, warmup_size="640x480")
    # ... and the node, which runs the warm-up, refuses it naming the limit
    with pytest.raises(ConfigError, match=r"307200 pixels is more than max_input_pixels \(1000\)"):
        parse_frame_size(cfg["warmup_size"], "warmup_size", max_side=cfg["max_input_side"],
                         max_pixels=cfg["max_input_pixels"])
    with pytest.raises(ConfigError, match=r"each side must be 1..600 \(max_input_side\)"):
        parse_frame_size("640x480", "warmup_size", max_side=600)
    assert parse_frame_size("600x400", "warmup_size", max_side=600, max_pixels=240000) == \
        (600, 400)
