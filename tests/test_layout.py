"""The tree states the architecture: imports only go downward (kernels < engine.model < engine.runtime <
engine.serving < engine entry points < studio < app), engine.text is a leaf beside kernels, and the studio's store and document
readers import nothing of the engine. Checked on the source with `ast`, so a new upward import fails here."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package prefix -> prefixes (of engine/, studio/, kernels/) its modules may import; most specific prefix wins
ALLOWED = {
    "kernels": ["kernels"],
    "engine.text": ["engine.text"],
    "engine.model": ["kernels", "engine.text", "engine.model"],
    "engine.runtime": ["kernels", "engine.text", "engine.model", "engine.runtime"],
    "engine.serving": ["kernels", "engine.model", "engine.runtime", "engine.text", "engine.serving"],
    "engine": ["kernels", "engine"],
    # replicas on Ray Serve: an entry point of the engine (its interface, its state tiers), below the studio
    "engine.cluster": ["engine.serving", "engine.text", "engine.cluster"],
    "studio.store": ["studio.store"],
    "studio.documents": ["studio.documents"],
    "studio.ui": ["engine", "studio"],
    "studio": ["engine", "studio.store", "studio.documents", "studio.api", "studio.api_request", "studio.chat",
               "studio.chat_settings", "studio.generation", "studio.prompt", "studio.model_info", "studio.replicas",
               "studio.api_tools", "studio.api_schema", "studio.api_reply", "studio.tools", "studio.tool_loop"],
    # the composition root mounts the page on the app (the one place a service layer reaches the UI)
    "studio.server": ["engine", "studio"],
}
OURS = ("engine", "studio", "kernels")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if (ROOT / (target + "." + a.name).replace(".", "/")).with_suffix(".py").exists()}
    return {m for m in found if m.split(".")[0] in OURS}


def rule_for(name: str) -> list[str]:
    best = max((p for p in ALLOWED if name == p or name.startswith(p + ".")), key=len)
    return ALLOWED[best]


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


SOURCES = sorted(p for d in ("engine", "studio", "kernels") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_downward(path):
    name = module_name(path)
    allowed = rule_for(name)
    bad = sorted(m for m in imports_of(path) if not any(under(m, a) for a in allowed))
    assert not bad, f"{name} imports {bad}; allowed: {allowed}"


def test_the_network_gets_its_rank_group_from_below():
    """The old cycle parallel -> worker -> layers -> parallel is gone: layers import the group primitive only."""
    for path in (ROOT / "engine/model").rglob("*.py"):
        assert not any(under(m, "engine.runtime") for m in imports_of(path)), path
    assert "engine.runtime.worker" in imports_of(ROOT / "engine/runtime/parallel.py")
    assert "engine.runtime.parallel" not in imports_of(ROOT / "engine/runtime/worker.py")
