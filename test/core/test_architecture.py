"""Who may import whom: the layer table of docs/architecture.md, checked on the source.

Imports are read with ``ast`` from every module of ``ovseg_ros`` (module-level and
function-level imports alike, relative imports resolved), so a rule breaks the
test the moment an import crosses a layer, whether or not that code path runs.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "ovseg_ros"

#: the only modules that may import rclpy: the node, the ROS layer, and the demo (a ROS
#: client that plays a bag into a running node and records what it publishes), and the
#: node-overhead bench (it publishes real messages to a listener process)
ROS_MODULES = ("ovseg_ros.node", "ovseg_ros.ros", "ovseg_ros.tools.demo",
               "ovseg_ros.tools.bench_node")
#: the one production function that may import ovseg_ros.testing (tiny models on demand)
TESTING_HOOK = ("ovseg_ros.weights.tiny", "register_tiny_models_if_named")
#: import cycles through function-level imports that exist today; a new one fails the test.
#: eval.cli <-> eval.multi_bag: multi_bag reuses cli's engine loading inside functions.
KNOWN_CYCLES = {frozenset({"ovseg_ros.eval.cli", "ovseg_ros.eval.multi_bag"})}


def _modname(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_modname(p): p for p in sorted(PKG.rglob("*.py"))}


class Import:
    def __init__(self, target: str, line: int, function: str, top_level: bool):
        self.target, self.line, self.function, self.top_level = target, line, function, top_level

    def __repr__(self) -> str:
        return f"{self.target} (line {self.line})"


def _imports(module: str) -> List[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: List[Import] = []

    def add(target: str, node, function: str) -> None:
        found.append(Import(target, node.lineno, function, function == ""))

    def visit(node, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, function or child.name)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[:len(package) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                add(target, child, function)
                for alias in child.names:    # `from . import x` imports the module x
                    if f"{target}.{alias.name}" in MODULES:
                        add(f"{target}.{alias.name}", child, function)
            visit(child, function)

    visit(tree, "")
    return found


IMPORTS: Dict[str, List[Import]] = {m: _imports(m) for m in MODULES}


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(modules, forbidden) -> List[str]:
    return [f"{m} imports {imp}" for m in modules for imp in IMPORTS[m] if forbidden(imp.target)]


def test_the_import_reader_sees_relative_and_function_level_imports():
    # the reader itself, on modules whose imports are known: a broken reader passes everything
    targets = {i.target for i in IMPORTS["ovseg_ros.engines.proxyclip"]}
    assert {"ovseg_ros.models.proxyclip", "ovseg_ros.backends.base",
            "ovseg_ros.registry"} <= targets
    weights = [i for i in IMPORTS["ovseg_ros.weights.tiny"]
               if i.target == "ovseg_ros.testing.tiny_models"]
    assert weights and all(i.function == TESTING_HOOK[1] and not i.top_level for i in weights)


def test_only_the_ros_layer_imports_rclpy():
    bad = _violations([m for m in MODULES if not _under(m, ROS_MODULES)],
                      lambda t: _under(t, ("rclpy",)))
    assert not bad, "rclpy outside node.py / ros/ (docs/architecture.md):\n" + "\n".join(bad)


def test_engines_never_import_a_concrete_backend_or_ros():
    engines = [m for m in MODULES if m.startswith("ovseg_ros.engines.")]
    assert "ovseg_ros.engines.proxyclip" in engines

    def forbidden(t: str) -> bool:
        concrete = _under(t, ("ovseg_ros.backends",)) and t not in ("ovseg_ros.backends",
                                                                     "ovseg_ros.backends.base")
        return concrete or _under(t, ("rclpy", "ovseg_ros.ros", "ovseg_ros.node"))

    bad = _violations(engines, forbidden)
    assert not bad, ("engines ask the registry for a backend by name, with an ExportSpec and a "
                     "BackendSpec (ovseg_ros/backends/base.py):\n" + "\n".join(bad))


#: the export command line (``python -m ovseg_ros.backends.onnx_export CONFIG``) loads a
#: segmenter to find the engine's ExportSpec; nothing else in backends/ may
CLI_ENTRY = ("ovseg_ros.backends.onnx_export", "main")


def test_backends_never_import_an_engine():
    backends = [m for m in MODULES if _under(m, ("ovseg_ros.backends",))]
    bad = [f"{m} imports {imp} in {imp.function or 'module scope'}" for m in backends
           for imp in IMPORTS[m]
           if _under(imp.target, ("ovseg_ros.engines",))
           or (_under(imp.target, ("ovseg_ros.segmenter",)) and (m, imp.function) != CLI_ENTRY)]
    assert not bad, "backends know no engine (everything comes in the ExportSpec):\n" + \
        "\n".join(bad)


def test_test_models_are_reached_only_through_the_on_demand_hook():
    bad = [f"{m} imports {imp} in {imp.function or 'module scope'}"
           for m in MODULES if not _under(m, ("ovseg_ros.testing",))
           for imp in IMPORTS[m]
           if _under(imp.target, ("ovseg_ros.testing",)) and (m, imp.function) != TESTING_HOOK
           # bench and demo choose the tiny presets themselves
           and not _under(m, ("ovseg_ros.tools.bench", "ovseg_ros.tools.demo"))]
    assert not bad, "\n".join(bad)


def test_lower_layers_stay_below():
    ours = lambda t: _under(t, ("ovseg_ros",))   # noqa: E731
    config_layer = {"ovseg_ros.schema", "ovseg_ros.config", "ovseg_ros.registry"} | {
        m for m in MODULES if m.startswith("ovseg_ros.engines.") and m.endswith("_config")}
    rules = {
        # the config layer imports only itself (the registry imports engines by name at
        # run time, through importlib, never with an import statement)
        "config": (config_layer, config_layer | {"ovseg_ros"}),
        "core": ({m for m in MODULES if _under(m, ("ovseg_ros.core",))},
                 config_layer | {"ovseg_ros", "ovseg_ros.core"}),
        "models": ({m for m in MODULES if _under(m, ("ovseg_ros.models",))},
                   config_layer | {"ovseg_ros", "ovseg_ros.core", "ovseg_ros.models"}),
    }
    bad = []
    for layer, (modules, allowed) in rules.items():
        for m in sorted(modules):
            for imp in IMPORTS[m]:
                if ours(imp.target) and not _under(imp.target, allowed):
                    bad.append(f"{layer}: {m} imports {imp}")
    assert not bad, "\n".join(bad)
    no_torch = _violations(sorted(config_layer), lambda t: _under(t, ("torch",)))
    assert not no_torch, "the config layer is torch-free:\n" + "\n".join(no_torch)


def _cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[Set[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            strong(v)
    return out


def _graph(top_level_only: bool) -> Dict[str, Set[str]]:
    return {m: {i.target for i in IMPORTS[m] if i.target in MODULES and i.target != m
                and (i.top_level or not top_level_only)} for m in MODULES}


def test_no_import_cycles():
    assert not _cycles(_graph(top_level_only=True))
    found = {frozenset(c) for c in _cycles(_graph(top_level_only=False))}
    assert found <= KNOWN_CYCLES, f"new import cycles: {[sorted(c) for c in found - KNOWN_CYCLES]}"
    # the bag reader/writer and bag-to-bag inference, in particular
    assert "ovseg_ros.eval.bag_infer" not in _graph(False)["ovseg_ros.eval.bags"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_config_is_torch_free_and_test_models_load_only_on_demand():
    """In a fresh interpreter: the schema, config and registry load without torch; importing
    every engine and backend registers no test model; a tiny name registers them."""
    code = textwrap.dedent("""
        import sys
        from ovseg_ros.config import make_config
        from ovseg_ros.registry import engine_config_modules, list_engines
        make_config({"device": "cpu"})
        assert list_engines() and engine_config_modules()
        assert "torch" not in sys.modules, "the config layer imported torch"
        import importlib
        from ovseg_ros.registry import _BACKEND_MODULES, _ENGINE_MODULES
        for name in list(_ENGINE_MODULES.values()) + list(_BACKEND_MODULES.values()):
            importlib.import_module(name)
        testing = [m for m in sys.modules if m.startswith("ovseg_ros.testing")]
        assert not testing, testing
        import open_clip
        from ovseg_ros.weights import register_tiny_models_if_named
        register_tiny_models_if_named("ViT-B-16")
        assert "ovseg_ros.testing.tiny_models" not in sys.modules
        register_tiny_models_if_named("ovseg-tiny-ViT")
        assert "ovseg-tiny-ViT" in open_clip.list_models()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def _flatten(d: dict, prefix: str = "") -> Dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("path,root", [("test/configs/tiny_proxyclip.yaml", ()),
                                       ("config/demo_tiny.yaml", ("/**", "ros__parameters"))])
def test_one_tiny_preset(path: str, root: Tuple[str, ...]):
    """The YAML copies of the tiny ProxyCLIP preset (tests, demo) carry its values."""
    from ovseg_ros.presets import TINY_PROXYCLIP

    data = yaml.safe_load((ROOT / path).read_text())
    for key in root:
        data = data[key]
    flat = _flatten(data)
    differ = {k: (flat.get(k), v) for k, v in TINY_PROXYCLIP.items() if flat.get(k) != v}
    assert not differ, f"{path} differs from ovseg_ros.presets.TINY_PROXYCLIP: {differ}"


#: the entry points that may change process-wide state: the API's one call, the command
#: line tools and the node (their own processes)
PROCESS_STATE_ALLOWED = ("ovseg_ros.segmenter", "ovseg_ros.tools", "ovseg_ros.node",
                         "ovseg_ros.weights.environment")


def _process_state_writes(module: str) -> List[str]:
    """Calls that change process-wide state: torch's thread count, a logger's level, an
    environment variable written."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("set_num_threads", "setLevel"):
            found.append(f"{module}:{node.lineno} {node.func.attr}")
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute)
                and t.value.attr == "environ" for t in node.targets):
            found.append(f"{module}:{node.lineno} os.environ[...] =")
    return found


def test_process_wide_state_is_set_only_at_the_entry_points():
    assert _process_state_writes("ovseg_ros.segmenter")   # the reader sees the one call
    bad = [w for m in MODULES if not _under(m, PROCESS_STATE_ALLOWED)
           for w in _process_state_writes(m)]
    assert not bad, ("engines, models and the library set no threads, logger levels or "
                     "environment (segmenter.apply_process_settings does, once):\n"
                     + "\n".join(bad))
