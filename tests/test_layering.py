"""The rooms of `pac/` are layered: a module imports only from its own room or rooms below it.

Every module under pac/ is parsed with `ast`; all its imports of `pac` modules count, at module
level or inside a function (the heavy ones are deferred there), absolute or relative. A room is
a top-level module (pac/config.py: `config`) or subpackage (pac/train/: `train`) of pac/, except
that every `pac/<room>/commands.py` belongs to `cli`: those are the `pac` command's parts,
registered by pac/cli.py, and may reach any room. The order below is the one the code satisfies
with the fewest exceptions; the exceptions are ALLOWED, one reason each.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Rooms from the bottom up, each with why it sits there.
ROOMS: list[tuple[str, str]] = [
    ("pac", "the package's own __init__: its version, nothing else"),
    ("tasks", "the task registry (embodiments, specs, experts' constants): plain data"),
    ("io", "atomic file writes and content hashes, knowing nothing of PAC"),
    ("batch", "the padded tensors that sampler, model and losses exchange"),
    ("progress", "progress lines for long loops"),
    ("plots", "figures drawn from plain numbers"),
    ("config", "the params file as a typed Config; reads the task registry, writes with io"),
    ("envs", "the tasks' simulators and scripted experts"),
    ("model", "the Perceiver-Actor-Critic network, built from a Config"),
    ("losses", "the PAC objective on a model and a batch"),
    ("checkpoint", "a model saved and loaded with its Config"),
    ("data", "episode store, generation in the envs, tokenizer, the sampler of batches"),
    ("tracking", "MLflow runs, metrics and the registry entry of a checkpoint"),
    ("evaluation", "rollouts and offline scores of checkpoints, logged through tracking"),
    ("train", "the trainer: data, model, losses, checkpoints, periodic evaluation"),
    ("rlft", "rounds of collection, ingestion, fine-tuning and evaluation"),
    ("review", "the champion decision, the model card, a run's round outputs"),
    ("pipeline", "the flow's steps, each a call into the rooms below"),
    ("scaling", "sweeps that run the pipeline's training at several sizes"),
    ("cli_args", "the options every `pac` sub-command shares"),
    ("cli", "the `pac` command: pac/cli.py and every room's commands.py"),
]
LEVEL = {room: i for i, (room, _) in enumerate(ROOMS)}

#: Upward imports that stay, as (importing file, imported module), with why.
ALLOWED: dict[tuple[str, str], str] = {
    ("pac/envs.py", "pac.evaluation.ogbench"):
        "make_env builds an OGBench task's env from its adapter, which lives with the evaluation"
        " harness that drives it (deferred: OGBench is a side install)",
    ("pac/data/sampler.py", "pac.evaluation.offline"):
        "training leaves out the episodes offline evaluation holds out; evaluation owns the split",
    ("pac/tracking.py", "pac.evaluation.rollout"):
        "the registered MLflow pyfunc serves the policy through PolicyServer when it is loaded",
    ("pac/rlft/rounds.py", "pac.review.champion"):
        "a round replaces the champion by review's rule, the same one `pac review` reports",
}


def module_name(path: str) -> str:
    """pac/data/store.py -> pac.data.store; pac/data/__init__.py -> pac.data."""
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "pac"
    if len(parts) == 3 and parts[2] == "commands":
        return "cli"
    return parts[1]


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def pac_imports(path: str, source: str) -> list[tuple[int, str]]:
    """(line, module) for every `pac` module that `source` (the file at `path`) imports."""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "pac"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "pac":
                continue
            # `from pac.x import y` imports the module pac.x.y where y is one
            subs = [f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}")]
            found += [(node.lineno, m) for m in subs or [module]]
    return found


def violations(path: str, source: str) -> list[tuple[str, str, str]]:
    """(message, file, imported module) for each import of a higher room than the file's own."""
    own = room(module_name(path))
    out = []
    for line, module in pac_imports(path, source):
        target = room(module)
        if LEVEL[target] > LEVEL[own]:
            out.append((f"{path}:{line}: room '{own}' (level {LEVEL[own]}) imports {module}"
                        f" of the higher room '{target}' (level {LEVEL[target]})", path, module))
    return out


def package_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pac").rglob("*.py"))


def test_every_module_is_in_a_room():
    rooms = {room(module_name(f)) for f in package_files()}
    assert rooms <= set(LEVEL), sorted(rooms - set(LEVEL))
    assert len(LEVEL) == len(ROOMS), "a room is listed twice"


def test_no_room_imports_a_higher_one():
    found = [v for f in package_files() for v in violations(f, (ROOT / f).read_text())]
    upward = [msg for msg, path, module in found if (path, module) not in ALLOWED]
    assert not upward, "\n".join(upward)
    unused = set(ALLOWED) - {(path, module) for _, path, module in found}
    assert not unused, f"ALLOWED entries no longer needed: {sorted(unused)}"


def test_the_checker_reports_an_upward_import():
    source = (
        '"""A low room reaching up."""\n'
        "from pac import __version__\n"
        "\n"
        "def f():\n"
        "    from pac.train.trainer import train\n"
        "    return train\n"
    )
    (msg, path, module), = violations("pac/tasks.py", source)
    assert (path, module) == ("pac/tasks.py", "pac.train.trainer")
    assert msg.startswith("pac/tasks.py:5: room 'tasks'") and "higher room 'train'" in msg
    # relative imports resolve against the importing package; a commands module is `cli`
    (msg, _, module), = violations("pac/model/encoders.py", "from ..rlft import rounds\n")
    assert module == "pac.rlft.rounds" and "room 'model'" in msg and "'rlft'" in msg
    assert violations("pac/model/commands.py", "from pac.pipeline import run_flow\n") == []
    assert violations("pac/train/trainer.py", "from . import engine\nimport pac.data\n") == []
