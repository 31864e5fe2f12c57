"""The CMake files install every file of the extension, list nothing that is missing, and use no globs.

Slicer's CMake macros copy only the files they are given, so a file that is on disk but not listed is silently
missing from the installed extension (a classic "works from source, ImportError when installed" bug). These tests
read the CMake files with a small parser (``set``/``include`` and ``${VAR}`` expansion are enough here) and compare
them with the files on disk, in both directions.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES_DIR = ROOT / "Modules"
MODULES = sorted(p for p in MODULES_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
UPDATE_COMMAND = "python Utilities/update_cmake_file_lists.py"
SHARED_LISTS = ("MEDAI_EXTENSION_PYTHON_SCRIPTS", "MEDAI_EXTENSION_RESOURCES", "MEDAI_RESOURCES")


def _load_updater() -> ModuleType:
    path = ROOT / "Utilities" / "update_cmake_file_lists.py"
    spec = importlib.util.spec_from_file_location("update_cmake_file_lists", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UPDATER = _load_updater()


# ---- a minimal CMake reader -------------------------------------------------------------------------------------
_COMMAND_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_ARGUMENT = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s()"]+)')
_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def _strip_comments(text: str) -> str:
    """Remove ``# ...`` line comments and ``#[[ ... ]]`` block comments (``#`` inside quotes is kept)."""
    text = re.sub(r"#\[(=*)\[.*?\]\1\]", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        quoted, kept = False, []
        for char in line:
            if char == '"':
                quoted = not quoted
            if char == "#" and not quoted:
                break
            kept.append(char)
        lines.append("".join(kept))
    return "\n".join(lines)


def parse_commands(text: str) -> list[tuple[str, str]]:
    """Top-level command invocations as ``(lower-case name, raw argument text)``."""
    text, commands, position = _strip_comments(text), [], 0
    while match := _COMMAND_NAME.search(text, position):
        depth, index, quoted = 1, match.end(), False
        while depth:
            if index >= len(text):
                raise AssertionError(f"unbalanced parentheses after {match.group(1)}(")
            char = text[index]
            if char == '"' and text[index - 1] != "\\":
                quoted = not quoted
            elif not quoted:
                depth += {"(": 1, ")": -1}.get(char, 0)
            index += 1
        commands.append((match.group(1).lower(), text[match.end() : index - 1]))
        position = index
    return commands


def _expand(value: str, variables: dict[str, list[str]]) -> str:
    for _ in range(10):  # nested references such as ${${NAME}_SCRIPTS} are not used here
        expanded = _VARIABLE.sub(lambda m: ";".join(variables.get(m.group(1), [m.group(0)])), value)
        if expanded == value:
            break
        value = expanded
    return value


def split_arguments(raw: str, variables: dict[str, list[str]]) -> list[str]:
    """CMake argument splitting: unquoted arguments are expanded and split on ``;``, quoted ones kept whole."""
    arguments: list[str] = []
    for quoted, unquoted in _ARGUMENT.findall(raw):
        if unquoted:
            arguments += [item for item in _expand(unquoted, variables).split(";") if item]
        else:
            arguments.append(_expand(quoted, variables))
    return arguments


def evaluate(path: Path, variables: dict[str, list[str]] | None = None) -> tuple[dict, list[tuple[str, list[str]]]]:
    """Run ``set()`` and ``include()`` of a CMake file; returns the variables and every command with its arguments.

    ``add_subdirectory`` is *not* followed (see :func:`evaluate_tree`), matching CMake's directory scopes.
    """
    variables = dict(variables or {})
    variables["CMAKE_CURRENT_SOURCE_DIR"] = [path.parent.as_posix()]
    variables.setdefault("CMAKE_SOURCE_DIR", [ROOT.as_posix()])
    commands: list[tuple[str, list[str]]] = []
    for name, raw in parse_commands(path.read_text(encoding="utf-8")):
        arguments = split_arguments(raw, variables)
        commands.append((name, arguments))
        if name == "set" and arguments:
            values = arguments[1:]
            if "CACHE" in values:
                values = values[: values.index("CACHE")]
            items = [item for value in values for item in value.split(";")]
            variables[arguments[0]] = [item for item in items if item and item != "PARENT_SCOPE"]
        elif name == "include" and arguments and Path(arguments[0]).is_file():
            variables, included = evaluate(Path(arguments[0]), variables)
            variables["CMAKE_CURRENT_SOURCE_DIR"] = [path.parent.as_posix()]
            commands += included
    return variables, commands


def evaluate_tree(path: Path, variables: dict[str, list[str]] | None = None) -> list[tuple[Path, str, list[str]]]:
    """Commands of a CMake file and of the subdirectories it adds, as ``(file, name, arguments)``."""
    variables, commands = evaluate(path, variables)
    found = []
    for name, arguments in commands:
        found.append((path, name, arguments))
        if name == "add_subdirectory" and arguments:
            child = path.parent / arguments[0] / "CMakeLists.txt"
            if child.is_file():
                found += evaluate_tree(child, variables)
    return found


def keyword_arguments(arguments: list[str], keywords: set[str]) -> dict[str, list[str]]:
    """Group a macro's arguments by keyword (``NAME x SCRIPTS a b RESOURCES c`` -> dict); lists are split on ``;``.

    A macro sees ``"${LIST}"`` as one argument but iterates over its items, so the items are what counts.
    """
    groups: dict[str, list[str]] = {}
    current = None
    for argument in arguments:
        if argument in keywords:
            current = argument
            groups.setdefault(current, [])
        elif current is not None:
            groups[current] += [item for item in argument.split(";") if item]
    return groups


def _commands(commands: list[tuple[str, list[str]]], name: str) -> list[list[str]]:
    return [arguments for command, arguments in commands if command == name]


# ---- the top-level file: metadata, modules, shared package ------------------------------------------------------
TOP_VARIABLES, TOP_COMMANDS = evaluate(ROOT / "CMakeLists.txt")


def test_extension_metadata_and_slicer_boilerplate() -> None:
    names = [name for name, _ in TOP_COMMANDS]
    assert names[0] == "cmake_minimum_required", "CMakeLists.txt must start with cmake_minimum_required()"
    assert ["MedAI"] in _commands(TOP_COMMANDS, "project")
    for variable in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert TOP_VARIABLES.get(f"EXTENSION_{variable}"), f"EXTENSION_{variable} is not set"
    assert TOP_VARIABLES["EXTENSION_CATEGORY"] == ["Segmentation"]
    assert "PyTorch" in " ".join(TOP_VARIABLES["EXTENSION_DEPENDS"]).split(), "torch comes from SlicerPyTorch"
    assert ["Slicer", "REQUIRED"] in _commands(TOP_COMMANDS, "find_package")
    includes = _commands(TOP_COMMANDS, "include")
    assert ["${Slicer_USE_FILE}"] in includes
    assert includes[-2:] == [["${Slicer_EXTENSION_GENERATE_CONFIG}"], ["${Slicer_EXTENSION_CPACK}"]], (
        "the extension config and CPack includes must come last"
    )


def test_one_add_subdirectory_per_module_folder() -> None:
    added = [arguments[0] for arguments in _commands(TOP_COMMANDS, "add_subdirectory")]
    expected = [f"Modules/{module.name}" for module in MODULES]
    assert sorted(added) == expected, f"add_subdirectory() calls {added} do not match the folders in Modules/"
    assert len(added) == len(set(added)), "a module is added twice"
    for module in MODULES:
        assert (module / "CMakeLists.txt").is_file(), f"{module.name} has no CMakeLists.txt"


def test_no_globbing_in_cmake_files() -> None:
    for path in [ROOT / "CMakeLists.txt", *ROOT.glob("CMake/*.cmake"), *MODULES_DIR.rglob("CMakeLists.txt")]:
        for name, arguments in parse_commands(path.read_text(encoding="utf-8")):
            assert not (name == "file" and "GLOB" in arguments), f"{path.relative_to(ROOT)} globs; list files instead"


def _shared_listed() -> dict[str, list[str]]:
    return {name: TOP_VARIABLES.get(name, []) for name in SHARED_LISTS}


def test_every_shared_file_on_disk_is_listed() -> None:
    on_disk = UPDATER.shared_file_lists(ROOT)
    listed = _shared_listed()
    missing = {name: sorted(set(on_disk[name]) - set(listed[name])) for name in SHARED_LISTS}
    missing = {name: files for name, files in missing.items() if files}
    assert not missing, (
        f"Files on disk are not installed by CMake (missing from {UPDATER.OUTPUT}): {missing}. "
        f"Run `{UPDATE_COMMAND}` and commit the result."
    )


def test_every_listed_shared_file_exists() -> None:
    stale = sorted(f for files in _shared_listed().values() for f in files if not (ROOT / f).is_file())
    assert not stale, f"{UPDATER.OUTPUT} lists files that do not exist: {stale}. Run `{UPDATE_COMMAND}`."


def test_shared_lists_are_exactly_what_the_update_script_writes() -> None:
    expected = UPDATER.render(UPDATER.shared_file_lists(ROOT))
    actual = (ROOT / UPDATER.OUTPUT).read_text(encoding="utf-8")
    assert actual == expected, f"{UPDATER.OUTPUT} is stale or edited by hand. Run `{UPDATE_COMMAND}`."


def test_shared_package_is_installed_beside_the_scripted_modules() -> None:
    calls = _commands(TOP_COMMANDS, "ctkmacrocompilepythonscript")
    assert len(calls) == 1, "expected one ctkMacroCompilePythonScript() call for MedAIExtension"
    keywords = {"TARGET_NAME", "SCRIPTS", "RESOURCES", "DESTINATION_DIR", "INSTALL_DIR", "NO_INSTALL_SUBDIR"}
    groups = keyword_arguments(calls[0], keywords)
    listed = _shared_listed()
    assert groups["SCRIPTS"] == listed["MEDAI_EXTENSION_PYTHON_SCRIPTS"]
    assert set(groups.get("RESOURCES", [])) == set(listed["MEDAI_EXTENSION_RESOURCES"] + listed["MEDAI_RESOURCES"])
    assert groups["DESTINATION_DIR"] == ["${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"]
    assert groups["INSTALL_DIR"] == ["${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"]
    assert "NO_INSTALL_SUBDIR" in groups, "without NO_INSTALL_SUBDIR the package lands one folder too deep"
    assert "MedAIExtension/__init__.py" in groups["SCRIPTS"]
    assert "Resources/requirements.txt" in groups["RESOURCES"]


# ---- each scripted module ---------------------------------------------------------------------------------------
MODULE_KEYWORDS = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"}


def _module_listing(module: Path) -> dict[str, list[str]]:
    _, commands = evaluate(module / "CMakeLists.txt")
    calls = _commands(commands, "slicermacrobuildscriptedmodule")
    assert len(calls) == 1, f"{module.name}/CMakeLists.txt must call slicerMacroBuildScriptedModule() once"
    return keyword_arguments(calls[0], MODULE_KEYWORDS)


def _module_files_on_disk(module: Path) -> set[str]:
    files = UPDATER.source_files(ROOT, module.relative_to(ROOT).as_posix())
    relative = {Path(f).relative_to(module.relative_to(ROOT)).as_posix() for f in files}
    return {f for f in relative if Path(f).name != "CMakeLists.txt"}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_module_name_matches_its_folder(module: Path) -> None:
    listing = _module_listing(module)
    assert listing["NAME"] == [module.name]
    assert f"{module.name}.py" in listing["SCRIPTS"]
    assert "WITH_GENERIC_TESTS" in listing


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_every_module_file_on_disk_is_listed(module: Path) -> None:
    listing = _module_listing(module)
    listed = set(listing.get("SCRIPTS", [])) | set(listing.get("RESOURCES", []))
    missing = sorted(_module_files_on_disk(module) - listed)
    assert not missing, (
        f"Modules/{module.name}/CMakeLists.txt does not list {missing}: add .py files to MODULE_PYTHON_SCRIPTS "
        "and other files to MODULE_PYTHON_RESOURCES, or they are missing from the installed extension."
    )


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_every_listed_module_file_exists_and_has_the_right_kind(module: Path) -> None:
    listing = _module_listing(module)
    scripts, resources = listing.get("SCRIPTS", []), listing.get("RESOURCES", [])
    stale = sorted(f for f in scripts + resources if not (module / f).is_file())
    assert not stale, f"Modules/{module.name}/CMakeLists.txt lists files that do not exist: {stale}"
    assert all(f.endswith(".py") for f in scripts), f"non-Python files in SCRIPTS: {scripts}"
    assert not any(f.endswith(".py") for f in resources), f"Python files belong in SCRIPTS, not RESOURCES: {resources}"
    assert len(scripts + resources) == len(set(scripts + resources)), "a file is listed twice"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_module_self_test_is_registered_with_ctest(module: Path) -> None:
    tests = [
        (path, arguments)
        for path, name, arguments in evaluate_tree(module / "CMakeLists.txt")
        if name == "slicer_add_python_unittest"
    ]
    scripts = [keyword_arguments(arguments, {"SCRIPT", "SLICER_ARGS", "TESTNAME_PREFIX"}) for _, arguments in tests]
    registered = [Path(group["SCRIPT"][0]).resolve() for group in scripts if group.get("SCRIPT")]
    assert (module / f"{module.name}.py").resolve() in registered, (
        f"no slicer_add_python_unittest(SCRIPT .../{module.name}.py) in Modules/{module.name} (its Testing/ folder)"
    )


def test_cmake_reader_handles_lists_quotes_and_comments() -> None:
    text = 'set(A x.py "y z.py") # comment (\nset(B ${A} w.py)\nfoo(SCRIPTS "${B}" RESOURCES r.png) #[[ block ]]'
    commands = parse_commands(text)
    assert [name for name, _ in commands] == ["set", "set", "foo"]
    variables: dict[str, list[str]] = {}
    for _name, raw in commands[:2]:
        arguments = split_arguments(raw, variables)
        variables[arguments[0]] = arguments[1:]
    assert variables["B"] == ["x.py", "y z.py", "w.py"]
    groups = keyword_arguments(split_arguments(commands[2][1], variables), {"SCRIPTS", "RESOURCES"})
    assert groups == {"SCRIPTS": ["x.py", "y z.py", "w.py"], "RESOURCES": ["r.png"]}
