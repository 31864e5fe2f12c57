"""The Slicer modules stay thin shells and their GUI files fit their code; MedAIExtension stays Qt-free.

Slicer is not available here, so these checks read the sources: the AST of the Python files and the XML of the
Qt Designer files. They catch what would otherwise only show up when a user opens the module: a misspelt
``SlicerParameterName``, a ``self.ui.<name>`` without a widget, or Qt code creeping into the shared package.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "MedAIExtension"
MODULES = sorted(p for p in (ROOT / "Modules").iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
MAX_MODULE_LINES = 300

#: Modules MedAIExtension must never import: the GUI toolkits.
FORBIDDEN_IMPORTS = {"qt", "ctk", "PythonQt", "slicer.qt"}
#: Application globals of ``slicer`` that do not exist outside the Slicer application (e.g. with slicer-core).
FORBIDDEN_SLICER_ATTRIBUTES = {"app", "mrmlScene", "modules", "moduleNames", "dicomDatabase", "qSlicerApplication"}


# ---- MedAIExtension is Qt-free and free of Slicer application globals -------------------------------------------
def slicer_global_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every use of Qt/CTK or of a Slicer application global in ``source``, as ``"line: what"``."""
    tree = ast.parse(source, filename)
    slicer_names = {"slicer"}  # names bound to the slicer package (import slicer as s)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in FORBIDDEN_IMPORTS or alias.name.split(".")[0] in {"qt", "ctk"}:
                    problems.append(f"{node.lineno}: import {alias.name}")
                if alias.name == "slicer" and alias.asname:
                    slicer_names.add(alias.asname)
                if alias.name.startswith("slicer.") and alias.name.split(".")[1] in FORBIDDEN_SLICER_ATTRIBUTES:
                    problems.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in FORBIDDEN_IMPORTS or node.module.split(".")[0] in {"qt", "ctk"}:
                problems.append(f"{node.lineno}: from {node.module} import ...")
            elif node.module == "slicer":
                bad = [alias.name for alias in node.names if alias.name in FORBIDDEN_SLICER_ATTRIBUTES | {"*"}]
                problems += [f"{node.lineno}: from slicer import {name}" for name in bad]
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_SLICER_ATTRIBUTES:
            if isinstance(node.value, ast.Name) and node.value.id in slicer_names:
                problems.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return sorted(problems, key=lambda problem: int(problem.split(":")[0]))


def test_the_checker_finds_qt_and_slicer_globals() -> None:
    source = (
        "import qt\nfrom ctk import ctkPathLineEdit\nimport slicer as s\nfrom slicer import mrmlScene\n"
        "def f(scene):\n    s.app.processEvents()\n    import slicer\n    return slicer.modules.segmentations\n"
        "ok = scene_logics = 'slicer.mrmlScene in a string is fine'\n"
    )
    assert [p.split(":")[0] for p in slicer_global_uses(source)] == ["1", "2", "4", "6", "8"]
    assert slicer_global_uses("import slicer\nnode = slicer.vtkMRMLScalarVolumeNode()\n") == []


def test_medaiextension_uses_no_qt_and_no_slicer_application_globals() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        relative = path.relative_to(ROOT)
        problems += [f"{relative}:{p}" for p in slicer_global_uses(path.read_text(encoding="utf-8"), str(path))]
    assert not problems, (
        "MedAIExtension must run without Qt and without the Slicer application: take the scene (or node) as a "
        "parameter and leave dialogs, QTimers and slicer.app to Modules/. Found:\n" + "\n".join(problems)
    )


# ---- each module: size, .ui file, parameter names, widget names --------------------------------------------------
def _module_file(module: Path) -> Path:
    return module / f"{module.name}.py"


def _ui_file(module: Path) -> Path:
    return module / "Resources" / "UI" / f"{module.name}.ui"


def _ui_widgets(module: Path) -> dict[str, ElementTree.Element]:
    root = ElementTree.parse(_ui_file(module)).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}


def _string_property(widget: ElementTree.Element, name: str) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            value = prop.find("string")
            return None if value is None else (value.text or "")
    return None


def _string_list_property(widget: ElementTree.Element, name: str) -> list[str]:
    for prop in widget.findall("property"):
        if prop.get("name") == name and prop.find("stringlist") is not None:
            return [item.text or "" for item in prop.find("stringlist").findall("string")]
    return []


def _is_parameter_node_wrapper(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "parameterNodeWrapper") or (
        isinstance(target, ast.Attribute) and target.attr == "parameterNodeWrapper"
    )


def parameter_annotations(source: str) -> dict[str, ast.expr]:
    """Parameters (name -> annotation) of the ``@parameterNodeWrapper`` class(es) in a module's source."""
    parameters: dict[str, ast.expr] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(_is_parameter_node_wrapper(d) for d in node.decorator_list):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    parameters[item.target.id] = item.annotation
    return parameters


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_module_file_stays_a_thin_shell(module: Path) -> None:
    lines = len(_module_file(module).read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{module.name}.py has {lines} lines (limit {MAX_MODULE_LINES}): move logic into MedAIExtension "
        f"(Qt-free) or, for Slicer-only glue, into {module.name}Lib/."
    )


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_module_file_follows_the_scripted_module_template(module: Path) -> None:
    tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    name = module.name
    for suffix, base in (("", "ScriptedLoadableModule"), ("Widget", "ScriptedLoadableModuleWidget")):
        assert name + suffix in classes, f"{name}.py has no class {name + suffix}"
        bases = [ast.unparse(b) for b in classes[name + suffix].bases]
        assert base in bases, f"{name + suffix} must derive from {base}"
    assert f"{name}Logic" in classes and f"{name}Test" in classes, "a Logic and a Test class are expected"
    assert parameter_annotations(ast.unparse(tree)), f"{name}.py has no @parameterNodeWrapper class"
    assert tree.body and isinstance(tree.body[0], ast.Expr), f"{name}.py needs a module docstring"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_ui_file_is_valid_designer_xml(module: Path) -> None:
    root = ElementTree.parse(_ui_file(module)).getroot()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget", "the top widget must be a qMRMLWidget"
    widgets = _ui_widgets(module)
    assert None not in widgets, "every widget needs a name"
    for connection in root.iter("connection"):
        for role in ("sender", "receiver"):
            assert connection.findtext(role) in widgets, f"connection {role} {connection.findtext(role)!r} unknown"
    used_classes = {widget.get("class") for widget in widgets.values()}
    declared = {custom.findtext("class") for custom in root.iter("customwidget")}
    custom = {cls for cls in used_classes if cls and cls.startswith(("qMRML", "qSlicer", "ctk"))}
    assert custom <= declared, f"custom widgets used but not declared in <customwidgets>: {custom - declared}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_every_slicer_parameter_name_is_a_parameter(module: Path) -> None:
    parameters = parameter_annotations(_module_file(module).read_text(encoding="utf-8"))
    bound = {
        name: widget
        for name, widget in _ui_widgets(module).items()
        if _string_property(widget, "SlicerParameterName") is not None
    }
    assert bound, f"{module.name}.ui binds no widget with a SlicerParameterName"
    for widget_name, widget in bound.items():
        parameter = _string_property(widget, "SlicerParameterName").split(".")[0]
        assert parameter in parameters, (
            f"{widget_name} in {module.name}.ui is bound to {parameter!r}, which is not a parameter of the "
            f"@parameterNodeWrapper class ({sorted(parameters)})"
        )
        annotation = ast.unparse(parameters[parameter])
        if widget.get("class") == "qMRMLNodeComboBox":
            node_types = _string_list_property(widget, "nodeTypes")
            assert annotation in node_types, f"{widget_name} shows {node_types} but {parameter} is a {annotation}"
        if widget.get("class") in {"QComboBox", "ctkComboBox"}:
            assert "Choice(" in annotation or "Enum" in annotation, (
                f"{parameter} is bound to a combo box, so it needs a Choice validator or an enum type"
            )


def _ui_attribute_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            if isinstance(node.value.value, ast.Name) and node.value.value.id == "self":
                names.add(node.attr)
    return names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_every_self_ui_name_is_a_widget_of_the_ui_file(module: Path) -> None:
    used = _ui_attribute_names(_module_file(module).read_text(encoding="utf-8"))
    missing = sorted(used - set(_ui_widgets(module)))
    assert not missing, f"{module.name}.py uses self.ui.{missing} but {module.name}.ui has no such widget"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_module_icon_is_a_png(module: Path) -> None:
    icon = module / "Resources" / "Icons" / f"{module.name}.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{icon.relative_to(ROOT)} is not a PNG"


# ---- the dependency helper of MedAISegmentation (pure Python parts) -----------------------------------------------
def _load_dependencies_module() -> ModuleType:
    path = ROOT / "Modules" / "MedAISegmentation" / "MedAISegmentationLib" / "dependencies.py"
    spec = importlib.util.spec_from_file_location("medai_segmentation_dependencies", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_file_and_package_are_found_from_a_source_checkout() -> None:
    dependencies = _load_dependencies_module()
    assert dependencies.requirementsFile() == ROOT / "Resources" / "requirements.txt"
    assert dependencies.packageParent() == ROOT


def test_missing_requirements_reports_only_what_pip_must_install(tmp_path: Path) -> None:
    dependencies = _load_dependencies_module()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# comment\n\npytest>=1.0  # installed\nmedai-surely-not-installed>=1\npytest>=9999\n"
        'pytest>=9999; python_version < "3"\n',
        encoding="utf-8",
    )
    missing = [str(requirement) for requirement in dependencies.missingRequirements(requirements)]
    assert missing == ["medai-surely-not-installed>=1", "pytest>=9999"]


def test_the_shipped_requirements_file_parses() -> None:
    dependencies = _load_dependencies_module()
    missing = dependencies.missingRequirements(ROOT / "Resources" / "requirements.txt")
    assert all(requirement.name for requirement in missing)
    assert sys.version_info >= (3, 11)
