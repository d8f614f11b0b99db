"""resolve_directory: turns may only run inside the workspace root."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencode_a2a_server.errors import InvalidRequest
from opencode_a2a_server.execution.directories import resolve_directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    (workspace / "proj" / "sub").mkdir(parents=True)
    (workspace / "notes.txt").write_text("not a directory")
    (tmp_path / "outside").mkdir()
    return workspace.resolve()


def test_none_means_the_root(root):
    assert resolve_directory(None, root, allow_override=True) == str(root)
    assert resolve_directory(None, root, allow_override=False) == str(root)


def test_relative_path_resolves_inside_the_root(root):
    assert resolve_directory("proj/sub", root, allow_override=True) == str(root / "proj" / "sub")


def test_relative_path_with_harmless_dotdot_stays_inside(root):
    assert resolve_directory("proj/sub/..", root, allow_override=True) == str(root / "proj")


def test_absolute_path_inside_the_root(root):
    target = root / "proj"
    assert resolve_directory(str(target), root, allow_override=True) == str(target)


def test_the_root_itself_is_accepted(root):
    assert resolve_directory(str(root), root, allow_override=True) == str(root)
    assert resolve_directory(".", root, allow_override=True) == str(root)


@pytest.mark.parametrize("requested", ["..", "../outside", "proj/../../outside"])
def test_dotdot_escape_is_refused(root, requested):
    with pytest.raises(InvalidRequest, match="outside the workspace root"):
        resolve_directory(requested, root, allow_override=True)


def test_absolute_path_outside_is_refused(root):
    with pytest.raises(InvalidRequest, match="outside the workspace root"):
        resolve_directory(str(root.parent / "outside"), root, allow_override=True)


def test_sibling_with_the_root_as_name_prefix_is_refused(root):
    sibling = root.parent / (root.name + "-evil")
    sibling.mkdir()
    with pytest.raises(InvalidRequest, match="outside the workspace root"):
        resolve_directory(str(sibling), root, allow_override=True)


def test_symlink_escape_is_refused(root):
    link = root / "escape"
    link.symlink_to(root.parent / "outside", target_is_directory=True)
    assert link.is_dir()
    with pytest.raises(InvalidRequest, match="outside the workspace root"):
        resolve_directory("escape", root, allow_override=True)
    with pytest.raises(InvalidRequest, match="outside the workspace root"):
        resolve_directory(str(link), root, allow_override=True)


def test_symlink_inside_the_root_resolves_to_its_target(root):
    link = root / "shortcut"
    link.symlink_to(root / "proj" / "sub", target_is_directory=True)
    assert resolve_directory("shortcut", root, allow_override=True) == str(root / "proj" / "sub")


def test_a_file_is_refused(root):
    with pytest.raises(InvalidRequest, match="is not a directory"):
        resolve_directory("notes.txt", root, allow_override=True)


def test_a_missing_directory_is_refused(root):
    with pytest.raises(InvalidRequest, match="is not a directory"):
        resolve_directory("proj/missing", root, allow_override=True)


def test_with_overrides_disabled_only_the_root_is_accepted(root):
    assert resolve_directory(str(root), root, allow_override=False) == str(root)
    assert resolve_directory(".", root, allow_override=False) == str(root)
    for requested in ("proj", str(root / "proj"), "..", "/"):
        with pytest.raises(InvalidRequest, match="overrides are disabled"):
            resolve_directory(requested, root, allow_override=False)


@pytest.mark.parametrize("requested", [42, ["proj"], {"path": "proj"}, True, "", "   "])
def test_non_strings_and_blank_strings_are_refused(root, requested):
    with pytest.raises(InvalidRequest, match="must be a non-empty string"):
        resolve_directory(requested, root, allow_override=True)


def test_nul_character_is_refused(root):
    with pytest.raises(InvalidRequest, match="NUL"):
        resolve_directory("proj\x00/etc", root, allow_override=True)
