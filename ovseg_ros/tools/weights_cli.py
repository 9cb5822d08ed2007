"""``ovseg-weights``: list, fetch, convert, verify and bundle the weights of a preset.

    ovseg-weights list                              # every preset, what it needs, what is here
    ovseg-weights fetch jetson_small                # download what is missing (network)
    ovseg-weights convert fcclip_cocopan.pth fcclip_cocopan.safetensors --engine fcclip
    ovseg-weights verify ~/.cache/ovseg_ros/weights
    ovseg-weights pack fcclip fcclip_bundle.tar     # everything for an air-gapped robot
    ovseg-weights unpack fcclip_bundle.tar /opt/ovseg_weights

Exit status: 0 done, 1 something is missing or wrong (the output says what), 2 bad usage.
The logic is in the ovseg_ros/weights package; docs/weights.md describes it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def _say(text: str) -> None:
    print(text, flush=True)


def _load_cfg(path: Optional[str]):
    from ovseg_ros.config import make_config

    return make_config(path) if path else None


def cmd_list(args) -> int:
    from ovseg_ros.weights.environment import hf_hub_cache
    from ovseg_ros.weights.needs import requirements
    from ovseg_ros.presets import list_presets, resolve_preset

    presets = [resolve_preset(p, _dir(args)) for p in args.presets] if args.presets \
        else list_presets(_dir(args))
    _say(f"huggingface_hub cache: {hf_hub_cache()}")
    any_missing = False
    for preset in presets:
        cfg = preset.cfg
        _say(f"\n{preset.name}  ({preset.source}; engine {cfg['engine']}"
             + (f", weights_dir {cfg['weights_dir']}" if cfg["weights_dir"] else "") + ")")
        try:
            needs = requirements(cfg)
        except Exception as exc:   # one broken preset must not hide the others
            _say(f"  cannot tell: {type(exc).__name__}: {exc}")
            any_missing = True
            continue
        if cfg["random_init"]:
            _say("  random weights (random_init: true): nothing to download")
        for n in needs:
            mark = "present" if n.present else "MISSING"
            _say(f"  [{mark}] {n.describe()}")
            _say(f"            {'at' if n.present else 'expected at'} {n.location}")
            if not n.present:
                any_missing = True
                _say(f"            bring it: {n.hint}")
    return 1 if args.strict and any_missing else 0


def _dir(args) -> Optional[Path]:
    return Path(args.config_dir) if getattr(args, "config_dir", None) else None


def cmd_fetch(args) -> int:
    from ovseg_ros.weights.fetch import fetch
    from ovseg_ros.presets import resolve_preset

    preset = resolve_preset(args.preset, _dir(args))
    if preset.cfg["random_init"]:
        _say(f"{preset.name}: random weights (random_init: true), nothing to fetch")
        return 0
    still = fetch(preset.cfg, say=_say)
    if still:
        return 1
    _say(f"{preset.name}: every weights file is present")
    return 0


def cmd_convert(args) -> int:
    from ovseg_ros.weights.convert import convert
    from ovseg_ros.weights.files import manifest_path

    manifest = convert(Path(args.input), Path(args.output), args.engine,
                          cfg=_load_cfg(args.config), trust_pickle=args.trust_pickle, say=_say)
    _say(f"wrote {args.output}: {manifest['keys']} tensors ({manifest['skipped_keys']} "
         f"training-only keys dropped), sha256 {manifest['sha256']}")
    _say(f"manifest: {manifest_path(Path(args.output))}")
    return 0


def _report(checks) -> int:
    bad = 0
    for c in checks:
        if c.ok:
            _say(f"OK    {c.path}" + (f"  ({'; '.join(c.notes)})" if c.notes else ""))
        else:
            bad += 1
            _say(f"FAIL  {c.path}")
            for p in c.problems:
                _say(f"        - {p}")
    _say(f"{len(checks) - bad} ok, {bad} failed")
    return 1 if bad else 0


def cmd_verify(args) -> int:
    from ovseg_ros.weights.verify import verify

    return _report(verify(Path(args.path)))


def cmd_pack(args) -> int:
    from ovseg_ros.weights.bundles import pack
    from ovseg_ros.presets import resolve_preset

    preset = resolve_preset(args.preset, _dir(args))
    bundle = pack(preset, Path(args.output), trust_pickle=args.trust_pickle, say=_say)
    _say(f"wrote {args.output}: preset {bundle['preset']}, {len(bundle['files'])} files")
    return 0


def cmd_unpack(args) -> int:
    from ovseg_ros.weights.bundles import unpack

    cfg_path, checks = unpack(Path(args.archive), Path(args.dest))
    code = _report(checks)
    if code == 0:
        _say(f"bundle ready in {Path(args.dest).expanduser().resolve()}; run the node with\n"
             f"  ovseg_node --ros-args --params-file {cfg_path}\n"
             "(weights_dir holds the bundle manifest, so nothing reaches for the network)")
    return code


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ovseg-weights", description="List, fetch, convert, "
                                 "verify and bundle the weights of ovseg_ros presets.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="every preset, the weights it needs, whether they are here")
    p.add_argument("presets", nargs="*", help="preset names or config files (default: all)")
    p.add_argument("--config-dir", help="folder of preset configs (default: the package's config/)")
    p.add_argument("--strict", action="store_true", help="exit 1 when anything is missing")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("fetch", help="download the missing weights of a preset")
    p.add_argument("preset", help="preset name (e.g. jetson_small, engine:fcclip) or config file")
    p.add_argument("--config-dir")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("convert", help="released checkpoint -> safetensors + manifest")
    p.add_argument("input", help="released file (.pth / .pkl / .safetensors)")
    p.add_argument("output", help="output .safetensors")
    p.add_argument("--engine", required=True, help="engine whose layout the file must fit "
                   "(fcclip, maftplus, ovseg)")
    p.add_argument("--config", help="config whose <engine>.* settings define the layout "
                   "(default: the engine's defaults)")
    p.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of a "
                   "file that needs it (runs whatever the file names; only for files you trust)")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("verify", help="check converted files or a bundle (sha256 + keys)")
    p.add_argument("path", help="a .safetensors, a folder of them, or an unpacked bundle")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("pack", help="a self-contained bundle of a preset's weights")
    p.add_argument("preset")
    p.add_argument("output", help="output .tar")
    p.add_argument("--config-dir")
    p.add_argument("--trust-pickle", action="store_true",
                   help="as for convert, for the released checkpoint")
    p.set_defaults(func=cmd_pack)
    p = sub.add_parser("unpack", help="extract and verify a bundle")
    p.add_argument("archive")
    p.add_argument("dest")
    p.set_defaults(func=cmd_unpack)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    from ovseg_ros.config import ConfigError
    from ovseg_ros.weights import WeightsError, WeightsToolError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (WeightsToolError, WeightsError, ConfigError) as exc:
        print(f"ovseg-weights {args.command}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
