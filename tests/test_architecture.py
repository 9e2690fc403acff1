"""The shape of the code: layers that hold, one public API, one writer, one flag default, results of one shape."""

import ast
import dataclasses
import inspect
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for package in ("converter", "benchmarks", "representative_data") for p in (REPO / package).rglob("*.py")
)


def _lint_imports(config_dir: pathlib.Path, root: pathlib.Path):
    env = dict(os.environ, PYTHONPATH=str(root))
    executable = pathlib.Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(executable), "--config", str(config_dir / "setup.cfg"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_layer_contracts_hold():
    completed = _lint_imports(REPO, REPO)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "Contracts: 3 kept, 0 broken." in completed.stdout


def test_the_contracts_catch_a_model_builder_importing_the_harness(tmp_path):
    copy = tmp_path / "repo"
    for name in ("converter", "benchmarks", "representative_data"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "setup.cfg", copy / "setup.cfg")
    builder = copy / "converter" / "models" / "gpt2_shape.py"
    builder.write_text(builder.read_text() + "\n\ndef _measure():\n    from benchmarks import harness  # noqa\n")
    completed = _lint_imports(copy, copy)
    assert completed.returncode != 0
    assert "converter.models is not allowed to import benchmarks" in completed.stdout


def test_importing_the_package_and_its_help_load_no_tensorflow():
    code = (
        "import sys, converter\n"
        "assert converter.convert_keras and converter.Recipe and converter.auto_convert\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "converter", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "--recipe" in completed.stdout  # absl exits 1 after --help
    assert not re.search(r"\|\s+(tensorflow|keras)\b", completed.stderr)


def test_every_public_name_resolves():
    import converter

    for name in converter.__all__:
        assert getattr(converter, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        converter.nope  # noqa: B018


def _defined_functions(path: pathlib.Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def test_one_atomic_writer_and_one_log_helper():
    writers = [p for p in SOURCES if re.search(r"os\.replace\(|tempfile\.mkstemp\(", p.read_text())]
    assert [p.relative_to(REPO).as_posix() for p in writers] == ["converter/common/files.py"]
    # The bench pack's runner checks the pack before importing anything of it, so it logs by itself.
    loggers = [p.relative_to(REPO).as_posix() for p in SOURCES if "_log" in _defined_functions(p)]
    assert loggers == ["benchmarks/pi_runner.py"]


def test_no_module_reaches_into_another_project_modules_private_names():
    modules = {}
    for path in SOURCES:
        dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
        modules[dotted.removesuffix(".__init__")] = path
    offenders = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    if target in modules:
                        aliases[alias.asname or alias.name] = target
                    elif alias.name.startswith("_") and node.module in modules:
                        offenders.append(f"{path.name}: from {node.module} import {alias.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                offenders.append(f"{path.relative_to(REPO)}: {node.value.id}.{node.attr}")
    assert not offenders, offenders


def test_every_command_defaults_to_the_same_model():
    from absl import flags

    import converter
    from converter.cli import flags as cli_flags

    cli_flags.model_flags()
    assert flags.FLAGS["model"].default == converter.DEFAULT_MODEL == "smollm2-135m"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^MODEL \?=\s*$", makefile, re.M), "the Makefile leaves the default to the commands"
    for path in (REPO / "converter" / "cli").glob("*.py"):
        assert 'DEFINE_string("model"' not in path.read_text(), f"{path.name} defines --model again"


def test_public_results_are_frozen_and_save_without_overwriting_by_default():
    import converter
    from converter.deploy import AndroidExport
    from converter.tools.auto import AutoResult
    from converter.tools.quant_debug import QuantDebugReport

    for result_type in (converter.ConversionResult, AutoResult, AndroidExport, QuantDebugReport, converter.Recipe):
        assert dataclasses.is_dataclass(result_type) and result_type.__dataclass_params__.frozen, result_type
        parameters = inspect.signature(result_type.save).parameters
        assert list(parameters)[:2] == ["self", "path"], result_type
        overwrite = parameters["overwrite"]
        assert overwrite.kind is inspect.Parameter.KEYWORD_ONLY and overwrite.default is False, result_type
        assert hasattr(result_type, "to_json"), result_type


def test_the_readme_is_a_user_guide_whose_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    for title in (
        "## Models",
        "## Modes",
        "## Python API",
        "## Recipes",
        "## Benchmarks",
        "## Deployment",
        "## Troubleshooting",
    ):
        assert title in readme
    links = re.findall(r"\]\(([^)#]+)", readme)
    assert links and all((REPO / link).exists() for link in links), [
        link for link in links if not (REPO / link).exists()
    ]
    # Every dated page says what produced its figures: the machine, the commit, the command.
    for page in (REPO / "docs").glob("20*.md"):
        text = page.read_text()
        assert "**Machine:**" in text and re.search(r"`[0-9a-f]{7}`", text), page
        assert re.search(r"`(make |python |qemu-)", text), page
