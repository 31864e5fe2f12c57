"""The Slicer modules stay thin shells and their GUI files fit their code; MedAIExtension stays Qt-free; the
modules share their Slicer-side code through the hidden MedAI Common module only.

Slicer is not available here, so these checks read the sources: the AST of the Python files and the XML of the
Qt Designer files. They catch what would otherwise only show up when a user opens the module: a misspelt
``SlicerParameterName``, a ``self.ui.<name>`` without a widget, or Qt code creeping into the shared package.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "MedAIExtension"
MODULES = sorted(p for p in (ROOT / "Modules").iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
MAX_MODULE_LINES = 200
#: The hidden module holding the Slicer-side code every MedAI module shares (no panel, no .ui).
COMMON = "MedAICommon"
#: The modules with a panel: each has a .ui, an icon and a parameter node.
PANEL_MODULES = [module for module in MODULES if module.name != COMMON]

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
    if name != COMMON:  # the hidden module has no panel, so no GUI state
        assert parameter_annotations(ast.unparse(tree)), f"{name}.py has no @parameterNodeWrapper class"
    assert tree.body and isinstance(tree.body[0], ast.Expr), f"{name}.py needs a module docstring"


def _module_settings(module: Path) -> dict[str, object]:
    """The ``self.parent.<name> = <literal>`` settings of the module class (dependencies, hidden, ...)."""
    settings: dict[str, object] = {}
    for node in ast.walk(ast.parse(_module_file(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute):
            target = node.targets[0]
            if ast.unparse(target.value) == "self.parent":
                with contextlib.suppress(ValueError):
                    settings[target.attr] = ast.literal_eval(node.value)
    return settings


def test_the_common_module_is_hidden_and_every_other_module_is_shown() -> None:
    assert (ROOT / "Modules" / COMMON) in MODULES, f"the shared module Modules/{COMMON} is missing"
    hidden = sorted(module.name for module in MODULES if _module_settings(module).get("hidden") is True)
    assert hidden == [COMMON], f"only {COMMON} may be hidden (it has no panel); hidden: {hidden}"
    assert _module_settings(ROOT / "Modules" / COMMON).get("dependencies") == []
    assert not _ui_file(ROOT / "Modules" / COMMON).exists(), f"{COMMON} is hidden: it has no panel to describe"


@pytest.mark.parametrize("module", PANEL_MODULES, ids=lambda m: m.name)
def test_modules_share_code_through_the_common_module_only(module: Path) -> None:
    assert _module_settings(module).get("dependencies") == [COMMON], (
        f"{module.name} must depend on {COMMON} (shared installer, staging, DICOM database, worker jobs) and on "
        "no other MedAI module"
    )
    others = {f"{other.name}Lib" for other in PANEL_MODULES if other != module}
    for path in sorted(module.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            used = {name.split(".")[0] for name in names} & others
            assert not used, f"{path.relative_to(ROOT)}:{node.lineno} imports {used}: move shared code to {COMMON}Lib"


def test_no_module_processes_events_by_hand() -> None:
    """Long work runs in the worker process and is polled; no Slicer module spins the event loop itself."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "Modules").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "processEvents" in line
    ]
    assert not found, f"processEvents in {found}: run the work in the worker process (MedAICommonLib.jobs)"


@pytest.mark.parametrize("module", PANEL_MODULES, ids=lambda m: m.name)
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


@pytest.mark.parametrize("module", PANEL_MODULES, ids=lambda m: m.name)
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


def _uses_job_widget_mixin(module: Path) -> bool:
    tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module.name}Widget")
    return "JobWidgetMixin" in [ast.unparse(base) for base in widget.bases]


@pytest.mark.parametrize("module", PANEL_MODULES, ids=lambda m: m.name)
def test_every_self_ui_name_is_a_widget_of_the_ui_file(module: Path) -> None:
    """In the module file, its Lib package and (for widgets using it) the shared job widget mixin."""
    sources = [_module_file(module), *sorted((module / f"{module.name}Lib").glob("*.py"))]
    if _uses_job_widget_mixin(module):
        sources.append(ROOT / "Modules" / COMMON / f"{COMMON}Lib" / "widget.py")
    widgets = set(_ui_widgets(module))
    for source in sources:
        missing = sorted(_ui_attribute_names(source.read_text(encoding="utf-8")) - widgets)
        assert not missing, f"{source.relative_to(ROOT)} uses self.ui.{missing} but {module.name}.ui has none"


def test_the_job_widget_mixin_is_used_and_checked() -> None:
    """The shared mixin drives the job widgets of the .ui files (the test above checks their names)."""
    used = _ui_attribute_names((ROOT / "Modules" / COMMON / f"{COMMON}Lib" / "widget.py").read_text(encoding="utf-8"))
    assert {"progressBar", "statusLabel"} <= used
    assert all(_uses_job_widget_mixin(module) for module in PANEL_MODULES), "every module runs its jobs the one way"


@pytest.mark.parametrize("module", PANEL_MODULES, ids=lambda m: m.name)
def test_module_icon_is_a_png(module: Path) -> None:
    icon = module / "Resources" / "Icons" / f"{module.name}.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{icon.relative_to(ROOT)} is not a PNG"


# ---- the dependency helper of MedAICommon (pure Python parts) -------------------------------------------------------
def _load_dependencies_module() -> ModuleType:
    path = ROOT / "Modules" / COMMON / f"{COMMON}Lib" / "dependencies.py"
    spec = importlib.util.spec_from_file_location("medai_common_dependencies", path)
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
