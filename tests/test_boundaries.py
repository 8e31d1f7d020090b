"""Every package talks to the others only through its contracts: the imports of clients/ and serving/.

Clients know the service only by the wire (gRPC stubs, command lines they start, the JSON those
print); serving never reaches into training or export, and only its MindSpore backend imports
MindSpore. Checked by parsing every module, so a lazy import inside a function counts too.
The same parse keeps the project to one string style: f-strings, never `"...".format(...)`.
"""
import ast
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = {"runtime_env", "latency", "genet", "inference", "kserve_bytes"}
"""Every package may import these: the process environment, the latency summary, the generated gRPC stubs
(genet.v1 and KServe v2's `inference`) and the raw form of KServe v2 BYTES tensors."""
ALLOWED: Dict[str, set] = {
    # modelrepo is the model repository's contract: the stress suite publishes versions through it.
    "clients": SHARED | {"clients", "modelrepo"},
    "serving": SHARED | {"serving", "modelrepo"},
}
MINDSPORE_BACKEND = "serving/backends/mindspore_backend.py"


def project_names() -> set:
    """The importable top-level names of this repository: its packages and its top-level modules."""
    names = {path.stem for path in REPO_ROOT.glob("*.py")}
    for path in REPO_ROOT.iterdir():
        if path.is_dir() and not path.name.startswith(".") and (any(path.glob("*.py")) or any(path.glob("*/*.py"))):
            names.add(path.name)
    return names


def imports(package: str) -> Iterator[Tuple[str, int, str]]:
    """(file, line, module) for every absolute import in every module under `package`."""
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                yield str(path.relative_to(REPO_ROOT)), node.lineno, module


def foreign_imports(package: str) -> List[str]:
    """"file:line module" for each import of a project package that `package` may not use."""
    project = project_names()
    return [f"{path}:{line} {module}" for path, line, module in imports(package)
            if module.split(".")[0] in project - ALLOWED[package]]


def test_the_rules_see_every_package_and_the_imports():
    assert {"clients", "serving", "training", "export", "modelrepo", "runtime_env"} <= project_names()
    assert ("clients/stress/repository.py", "modelrepo.layout") in {(p, m) for p, _, m in imports("clients")}
    assert "serving" not in ALLOWED["clients"] and not {"training", "export"} & (ALLOWED["clients"] | ALLOWED["serving"])


def test_clients_import_nothing_from_serving_training_or_export():
    assert foreign_imports("clients") == []


def test_serving_imports_nothing_from_training_export_or_the_clients():
    assert foreign_imports("serving") == []


def test_only_the_mindspore_backend_of_serving_imports_mindspore():
    importers = {path for path, _, module in imports("serving") if module.split(".")[0] == "mindspore"}
    assert importers == {MINDSPORE_BACKEND}


def project_files() -> List[Path]:
    """Every Python file of the repository, committed or new, but what git ignores (virtualenvs, generated gRPC
    stubs, build folders)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.py"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return [REPO_ROOT / name for name in sorted(listed.splitlines()) if (REPO_ROOT / name).is_file()]


def literal_format_lines(tree: ast.AST) -> List[int]:
    """The line of every `.format(...)` called on a string literal in `tree`."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str)]


def test_the_style_rule_sees_every_project_file_and_literal_format_calls():
    files = {str(path.relative_to(REPO_ROOT)) for path in project_files()}
    assert {"serving/workers/worker.py", "clients/stress/report.py", "tests/test_boundaries.py"} <= files
    assert not any("_pb2" in name or name.startswith(".venv") for name in files)
    assert literal_format_lines(ast.parse('a = "{}".format(1)\nb = f"{a}"\nc = ("{}" "{}").format(a, b)\n'
                                          'd = template.format(a)')) == [1, 3]


def test_strings_are_formatted_with_f_strings_only():
    calls = [f"{path.relative_to(REPO_ROOT)}:{line}" for path in project_files()
             for line in literal_format_lines(ast.parse(path.read_text(), str(path)))]
    assert calls == []
