"""The rooms of the house (STYLE.md) and the arrows between them: every module's imports, walked
from the source, against the rules written once, here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OURS = ("domain", "projections", "adapters", "consumers", "sandbox", "devservices")

# Which of our rooms each room may import. Data flows one way: Kafka -> consumers -> domain ->
# store -> projections -> consumers -> adapters.salesforce; only consumers wires the rooms.
MAY_IMPORT = {
    "domain": {"domain"},
    "projections": {"projections", "domain"},
    "adapters": {"adapters", "domain"},
    "consumers": set(OURS),
    "sandbox": {"sandbox"},  # an independent oracle: nothing of the product
    "devservices": {"devservices"},
}
# The domain knows nothing of infrastructure: the standard library, eventsourcing, msgspec.
DOMAIN_THIRD_PARTY = {"eventsourcing", "msgspec"}
# The development parts are reached only through the verbs that need them.
ONLY_FROM = {
    "sandbox": {"consumers.cli_sandbox", "consumers.cli_demo"},
    "devservices": {"consumers.cli_services", "consumers.bootstrap"},
}


def imports_of(path: Path) -> set[str]:
    """Top-level names of every import in a module, including those inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules() -> list[tuple[str, str, set[str]]]:
    found = []
    for room in OURS:
        for path in sorted((REPO / room).rglob("*.py")):
            dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found.append((room, dotted.removesuffix(".__init__"), imports_of(path)))
    return found


def test_every_arrow_follows_the_rules() -> None:
    wrong = []
    for room, module, imported in modules():
        for target in imported & set(OURS):
            if target not in MAY_IMPORT[room]:
                wrong.append(f"{module} imports {target}")
            allowed = ONLY_FROM.get(target)
            if allowed is not None and room != target and module not in allowed:
                wrong.append(f"{module} imports {target} (only {sorted(allowed)} may)")
        if room == "domain":
            third_party = imported - set(OURS) - set(sys.stdlib_module_names) - {"__future__"}
            wrong.extend(f"{module} imports {name}" for name in third_party - DOMAIN_THIRD_PARTY)
    assert not wrong, "arrows against the rooms' rules:\n" + "\n".join(sorted(wrong))


def test_the_walk_sees_the_arrows() -> None:
    """The rule test would catch a wrong arrow: the walk finds imports at any depth."""
    walked = {module: imported for _, module, imported in modules()}
    assert "domain" in walked["adapters.event_store"]
    assert "sandbox" in walked["consumers.cli_sandbox"]  # imported inside the command
    assert len(walked) > 40
