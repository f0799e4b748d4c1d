"""The package's import graph by stage of the data path; fails on any import that points up.

Each module of hear_contrastune gets a stage, lowest first: base helpers, data, backbones,
estimators (kNN search, the logistic fit, the valid choice), training, the HEAR API and
`embed`, probes, comparison, then the command line's shared options. A module may import its
own stage or one below; an import of a later stage (at module level or inside a function) is
an arrow upward, as is any import of eval_tasks (the offline task builders, which only the
top-level cli.py may use). Prints the stage graph and each module's imports; exits 1 listing
the upward arrows, 0 if there are none.

    python scripts/import_graph.py [--quiet]
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hear_contrastune"
FORBIDDEN = ("eval_tasks",)  # never imported by the package, at any stage

# Stage name -> the modules (or packages, with everything under them) it holds, lowest first.
STAGES: dict[str, tuple[str, ...]] = {
    "base": ("errors", "atomic", "lock", "outputs"),
    "data": ("data",),
    "backbones": ("backbones",),
    "estimators": ("estimators",),
    "training": ("training", "losses", "search"),
    "hear_api": ("hear_api", "embed", "validate", ""),  # "": the package's __init__
    "probes": ("probes",),
    "comparison": ("comparison",),
    "cli": ("cli_options",),
}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def stage_of(module: str) -> int | None:
    """The index of a package module's stage: its longest matching entry in STAGES."""
    rel = module.removeprefix(PACKAGE).removeprefix(".")
    best, depth = None, -1
    for index, prefixes in enumerate(STAGES.values()):
        for prefix in prefixes:
            if (rel == prefix or rel.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    return best


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules and forbidden top-level packages that `module` imports."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod where there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            top = target.split(".")[0]
            if top in FORBIDDEN:
                names.add(top)
            elif top == PACKAGE:
                while target not in known and "." in target:  # pkg.mod.attr -> pkg.mod
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    names.add(target)
    return names


def graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's imports, and the problems: unstaged modules and upward or forbidden
    imports, one line each."""
    known = modules(root)
    edges = {module: imports(module, path, known) for module, path in known.items()}
    names = list(STAGES)
    problems = [f"{module}: no stage (add it to STAGES)"
                for module in known if stage_of(module) is None]
    for module, targets in edges.items():
        here = stage_of(module)
        for target in sorted(targets):
            if target.split(".")[0] in FORBIDDEN:
                problems.append(f"{module} imports {target}: the package may not import it")
                continue
            there = stage_of(target)
            if here is not None and there is not None and there > here:
                problems.append(f"{module} [{names[here]}] imports {target} "
                                f"[{names[there]}]: a later stage")
    return edges, problems


def main(argv: list[str]) -> int:
    edges, problems = graph()
    names = list(STAGES)
    if "--quiet" not in argv:
        between: dict[tuple[int, int], int] = defaultdict(int)
        for module, targets in edges.items():
            for target in targets:
                here, there = stage_of(module), stage_of(target)
                if here is not None and there is not None and here != there:
                    between[here, there] += 1
        print("stages, lowest first: " + " < ".join(names))
        print("\nstage -> stage it imports (module imports)")
        for (here, there), count in sorted(between.items()):
            print(f"  {names[here]:<11} -> {names[there]:<11} {count}")
        print("\nmodule [stage] -> package modules it imports")
        for module in sorted(edges, key=lambda m: (stage_of(m) or 0, m)):
            stage = names[stage_of(module)] if stage_of(module) is not None else "?"
            targets = ", ".join(t.removeprefix(PACKAGE + ".") for t in sorted(edges[module]))
            print(f"  {module.removeprefix(PACKAGE + '.') or PACKAGE} [{stage}]"
                  + (f" -> {targets}" if targets else ""))
    if problems:
        print(f"\n{len(problems)} import(s) against the data path:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("\nno import points to a later stage")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
