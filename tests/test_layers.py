"""docs/layers.md holds: every import of octomega/, data_prep/ and recipes/ (inside functions too) goes to a layer
its row allows; the config layer is standard library only at module level; resolving and validating a recipe
imports neither torch nor Megatron-Core."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("octomega", "data_prep", "recipes")
MAP = ROOT / "docs" / "layers.md"


def layer_map() -> tuple[dict[str, list[str]], dict[str, set[str]], set[tuple[str, str]]]:
    """({layer: module names}, {layer: layers it may import}, {(importer, imported) listed as exceptions})."""
    modules, allowed, every = {}, {}, []
    for line in MAP.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 3 or cells[0] == "layer":
            continue
        layer, names, may = cells
        modules[layer] = re.findall(r"`([^`]+)`", names)
        if may == "every layer":
            every.append(layer)
        allowed[layer] = set() if may.startswith("nothing") or may == "every layer" else {
            w.strip() for w in may.split(",")}
    for layer in every:
        allowed[layer] = set(modules) - {layer}
    exceptions = set(re.findall(r"^- `([\w.]+)` -> `([\w.]+)`", MAP.read_text(), re.M))
    return modules, allowed, exceptions


def layer_of(module: str, modules: dict[str, list[str]]) -> str | None:
    """The layer naming `module` most specifically: its own name, else a pattern (`octomega.*.cli`), else the
    deepest package above it (`octomega` itself names only the package)."""
    best, best_rank = None, (-1, -1)
    for layer, names in modules.items():
        for name in names:
            if module == name:
                rank = (2, len(name))
            elif fnmatch.fnmatchcase(module, name):
                rank = (1, len(name))
            elif name != "octomega" and "*" not in name and module.startswith(name + "."):
                rank = (0, len(name))
            else:
                continue
            if rank > best_rank:
                best, best_rank = layer, rank
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) of every import statement of the file."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(up + ([child.module] if child.module else []))
                subs = [f"{base}.{a.name}" for a in child.names if is_module(f"{base}.{a.name}")]
                out.extend((m, child.lineno, in_function) for m in (subs or [base]))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return out


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_map_is_one_way():
    modules, allowed, _ = layer_map()
    assert {"config", "runtime", "model", "train", "rl", "eval", "convert", "generate", "recipes", "cli"} <= set(modules)
    for layer, may in allowed.items():
        assert may <= set(modules), f"docs/layers.md: {layer} may import unknown layers {may - set(modules)}"
    order, left = [], dict(allowed)  # topological order: the allowed imports form no cycle
    while left:
        ready = [layer for layer, may in left.items() if may <= set(order)]
        assert ready, f"docs/layers.md: the allowed imports of {sorted(left)} form a cycle"
        order += ready
        for layer in ready:
            del left[layer]


def test_every_module_is_in_a_layer():
    modules, _, _ = layer_map()
    missing = [module_name(p) for p in source_files() if layer_of(module_name(p), modules) is None]
    assert not missing, f"modules in no layer of docs/layers.md: {missing}"


def test_imports_follow_the_layers():
    modules, allowed, exceptions = layer_map()
    wrong = []
    for path in source_files():
        me = module_name(path)
        mine = layer_of(me, modules)
        for target, line, lazy in imports(path):
            if target.split(".")[0] not in PACKAGES:
                continue
            theirs = layer_of(target, modules)
            if theirs in (mine, None) or theirs in allowed[mine] or (me, target) in exceptions:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line}: {me} ({mine}) imports {target} ({theirs})"
                         + (" inside a function" if lazy else ""))
    assert not wrong, "imports against docs/layers.md:\n" + "\n".join(wrong)


def test_config_layer_is_standard_library_only():
    modules, _, _ = layer_map()
    wrong = []
    for path in source_files():
        if layer_of(module_name(path), modules) != "config":
            continue
        for target, line, lazy in imports(path):
            top = target.split(".")[0]
            if not lazy and top not in sys.stdlib_module_names and top != "__future__" and (
                    layer_of(target, modules) != "config"):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not wrong, "module-level imports beyond the standard library in the config layer:\n" + "\n".join(wrong)


VALIDATE = """
import json, sys
import recipes
from octomega.cli import main, resolve_config
from octomega.config import validate
from octomega.rl.cli import resolve
from octomega.rl.config import validate_rl

validate(resolve_config("tiny_stable", []))
validate(resolve_config("llama31_8b_decay_long", ["train.train_tokens=1e9"]), 16)
validate_rl(resolve("tiny_rl_grpo_short", []))
validate_rl(resolve("llama32_3b_rl_ppo", []), 8)
recipes.get("llama32_1b_eval_long", "eval")
codes = [main(["train", "tiny_stable", "parallel.tp=3"]), main(["recipes"])]
print(json.dumps({"codes": codes, "heavy": sorted({m.split(".")[0] for m in sys.modules}
                                                  & {"torch", "megatron", "transformers"})}))
"""


def test_validating_a_recipe_imports_no_torch():
    """`octomega train RECIPE` and `octomega rl RECIPE` resolve and validate before anything heavy loads: a bad
    config fails in a fraction of a second, and CPU numerics can still be pinned without restarting."""
    p = subprocess.run([sys.executable, "-c", VALIDATE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"codes": [2, 0], "heavy": []}, out
    assert "octomega train: error: parallel.tp=3 does not divide" in p.stderr


@pytest.mark.parametrize("source, expected", [
    ("import octomega.config\nfrom octomega.train import loop\n", ["octomega.config", "octomega.train.loop"]),
    ("def f():\n    from octomega.model.llama import build_model\n", ["octomega.model.llama"]),
    ("from octomega import checkpoint as ckpt\n", ["octomega.checkpoint"]),
])
def test_the_scanner_sees_every_import(tmp_path, source, expected, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for pkg in ("octomega/train", "octomega/model"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for mod in ("octomega/config.py", "octomega/train/loop.py", "octomega/model/llama.py", "octomega/checkpoint.py",
                "octomega/__init__.py"):
        (tmp_path / mod).touch()
    f = tmp_path / "octomega" / "probe.py"
    f.write_text(source)
    assert [m for m, _, _ in imports(f)] == expected
