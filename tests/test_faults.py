"""Fault injection: every command that writes, with each of its writes failing in turn.

A write fails the way a full disk (ENOSPC) or a refused folder (EACCES) makes it fail. After every failure the
command must print one line (no traceback), exit 1 (a fault of the machine, not of the user), leave every
output and index that existed before byte-identical, and leave no temporary or staging file behind. A real full
disk and a real read-only folder (small tmpfs mounts) back the injected faults up where the machine allows mounts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import rscbir.atomic
from conftest import blob_image, write_raster
from rscbir.cli import cli

MODEL = ["--preset", "rgb", "--patch-size", "32", "--input-size", "32"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Two dates of a small RGB scene and an aligned index of the first one, built once for the module."""
    root = tmp_path_factory.mktemp("faults")
    before = blob_image(128, 128, centre=(40, 40), sigma=10, seed=1)
    after = before.copy()
    after[:, 70:100, 70:110] = 240  # something new on the ground
    write_raster(root / "scene_20200101.tif", before)
    write_raster(root / "scene_20210101.tif", after)
    (root / "work").mkdir()
    result = run("index", "build", root / "scene_20200101.tif", "--align", *MODEL, "-o", root / "work" / "idx")
    assert result.exit_code == 0, result.output
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (hidden ones too) with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _commands(root: Path, work: Path) -> dict[str, list]:
    a, b, idx = root / "scene_20200101.tif", root / "scene_20210101.tif", work / "idx"
    return {
        "tile": ["tile", a, *MODEL[:4], "-o", work / "tiles.parquet"],
        "embed": ["embed", a, *MODEL, "-o", work / "emb"],
        "index (append)": ["index", "build", b, "--align", *MODEL, "-o", idx],
        "index (new folder)": ["index", "build", a, *MODEL, "-o", work / "new_idx"],
        "index remove": ["index", "remove", idx, "--date", "2020-01-01"],
        "query (3 outputs)": ["query", idx, "--patch-id", "scene_20200101:1:1", "-k", "3", "-o", work / "hits.geojson",
                              "--preview", work / "hits.png", "--html", work / "hits.html"],
        "change (3 outputs)": ["change", a, b, *MODEL, "-o", work / "change.geojson", "--scores", work / "scores.tif",
                               "--preview", work / "change.png"],
    }


def _prepare(root: Path, name: str, dest: Path) -> Path:
    """A fresh work folder: the module's index, plus older versions of the file outputs for the command."""
    shutil.copytree(root / "work", dest)
    if name == "index remove":  # needs a second scene to remove one
        assert run("index", "build", root / "scene_20210101.tif", "--align", *MODEL, "-o", dest / "idx").exit_code == 0
    for old in ("tiles.parquet", "hits.geojson", "hits.png", "change.geojson", "scores.tif"):
        (dest / old).write_bytes(b"an earlier result that must survive\n")
    return dest


def _count_writes(monkeypatch) -> list:
    calls = []
    real = rscbir.atomic.fsync_path

    def counting(path):
        calls.append(str(path))
        real(path)

    monkeypatch.setattr(rscbir.atomic, "fsync_path", counting)
    return calls


def _fail_write(monkeypatch, n: int, error: OSError) -> None:
    """The ``n``-th flush of a written file (1-based) fails: the disk filled while it was written."""
    seen = [0]
    real = rscbir.atomic.fsync_path

    def failing(path):
        seen[0] += 1
        if seen[0] == n:
            raise type(error)(error.errno, error.strerror, str(path))
        real(path)

    monkeypatch.setattr(rscbir.atomic, "fsync_path", failing)


PROGRESS = re.compile(r"^[^:]+: \d+(/\d+)? \w+ (done in |\()")  # rscbir.progress's plain lines (stderr is no terminal here)


def _error_lines(stderr: str) -> list[str]:
    """What a command said on stderr, less its progress lines."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS.match(line)]


def _assert_clean_failure(result, before: dict, work: Path) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    after = _snapshot(work)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}


COMMANDS = ["tile", "embed", "index (append)", "index (new folder)", "index remove", "query (3 outputs)", "change (3 outputs)"]


@pytest.mark.parametrize("name", COMMANDS)
def test_each_write_failing_in_turn_leaves_everything_as_it_was(base, tmp_path, monkeypatch, name):
    # a clean run first: how many files the command flushes (its writes), and that it succeeds at all
    dry = _prepare(base, name, tmp_path / "dry")
    calls = _count_writes(monkeypatch)
    ok = run(*_commands(base, dry)[name])
    assert ok.exit_code == 0, ok.output
    writes = len(calls)
    assert writes >= 1
    monkeypatch.undo()
    for n in range(1, writes + 1):
        work = _prepare(base, name, tmp_path / f"fault{n}")
        before = _snapshot(work)
        with monkeypatch.context() as patch:
            _fail_write(patch, n, OSError(errno.ENOSPC, "No space left on device"))
            result = run(*_commands(base, work)[name])
        _assert_clean_failure(result, before, work)
        assert "No space left on device" in result.stderr
    # a refused temporary file (EACCES) at the first write
    work = _prepare(base, name, tmp_path / "eacces")
    before = _snapshot(work)

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir") or (args[2] if len(args) > 2 else None))

    with monkeypatch.context() as patch:
        patch.setattr(rscbir.atomic.tempfile, "mkstemp", refused)
        patch.setattr(rscbir.atomic.tempfile, "mkdtemp", refused)
        result = run(*_commands(base, work)[name])
    _assert_clean_failure(result, before, work)
    assert "Permission denied" in result.stderr


def test_missing_output_folder_is_a_user_mistake_refused_before_any_work(base, tmp_path):
    for name, args in _commands(base, tmp_path / "absent").items():
        if name == "index remove":
            continue
        result = run(*args)
        assert result.exit_code == 2, (name, result.output)
        assert "does not exist; create it first" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "absent").exists()


def _mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 192 KiB file system, to fill for real (needs root and mount: skipped elsewhere)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=192k"):
        pytest.skip("a real full disk needs a tmpfs mount (root); the injected ENOSPC cases above cover the same paths")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_real_full_disk(base, small_disk):
    (small_disk / "hits.geojson").write_text("an earlier result\n")
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * max(free - 8192, 0))  # 8 KiB left: less than a contact sheet
    before = _snapshot(small_disk)
    big = base / "work" / "idx"
    result = run("query", big, "--patch-id", "scene_20200101:1:1", "-k", "3", "-o", small_disk / "hits.geojson",
                 "--preview", small_disk / "hits.png", "--html", small_disk / "hits.html")  # fmt: skip
    _assert_clean_failure(result, before, small_disk)
    result = run("index", "build", base / "scene_20210101.tif", "--align", *MODEL, "-o", small_disk / "idx")
    _assert_clean_failure(result, before, small_disk)


def test_a_real_read_only_folder(base, tmp_path):
    folder = tmp_path / "ro"
    if not _mount_tmpfs(folder, "ro,size=64k"):
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            pytest.skip("no read-only folder can be made here (root without mount)")
    try:
        result = run("tile", base / "scene_20200101.tif", *MODEL[:4], "-o", folder / "tiles.parquet")
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert len(_error_lines(result.stderr)) == 1
        assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["umount", str(folder)], check=False, capture_output=True)


# ------------------------------------------------------------------ integrity
def test_check_names_every_kind_of_damaged_file(base, tmp_path):
    work = _prepare(base, "index remove", tmp_path / "work")  # two scenes: vectors, augmented, FAISS, catalog
    idx = work / "idx"
    clean = run("check", idx)
    assert clean.exit_code == 0 and "ok" in clean.stderr, clean.output
    manifest = json.loads((idx / "index.json").read_text())
    kinds = {name: kind for segment in manifest["segments"] for kind, name in segment["files"].items()}
    kinds |= {name: kind for kind, name in manifest["files"].items()}  # shared files: the PCA
    assert {"catalog", "vectors", "faiss", "augmented"} <= set(kinds.values()) and set(manifest["checksums"]) == set(kinds)
    for name, kind in kinds.items():
        damaged = tmp_path / f"damaged_{name}"
        shutil.copytree(idx, damaged)
        data = bytearray((damaged / name).read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])  # 64 bytes overwritten in place
        (damaged / name).write_bytes(bytes(data))
        report = run("check", damaged)
        assert report.exit_code == 1, (kind, report.output)
        assert f"DAMAGED {damaged / name}" in report.output and "bytes overwritten" in report.output
    truncated = tmp_path / "truncated"
    shutil.copytree(idx, truncated)
    vectors = truncated / manifest["segments"][-1]["files"]["vectors"]
    vectors.write_bytes(vectors.read_bytes()[:-1000])
    opened = run("query", truncated, "--patch-id", "scene_20200101:1:1")
    assert opened.exit_code == 2 and "damaged" in opened.output and "Traceback" not in opened.output  # caught at open, cheaply


def test_remove_a_scene_or_a_date(base, tmp_path):
    work = _prepare(base, "index remove", tmp_path / "work")
    idx = work / "idx"
    both = json.loads((idx / "index.json").read_text())
    assert both["count"] == 32
    unknown = run("index", "remove", idx, "--scene", "nope")
    assert unknown.exit_code == 2 and "no scene 'nope'" in unknown.output
    assert json.loads((idx / "index.json").read_text()) == both
    removed = run("index", "remove", idx, "--scene", "scene_20210101")
    assert removed.exit_code == 0, removed.output
    kept = json.loads((idx / "index.json").read_text())
    assert kept["count"] == 16 and [s["scene_id"] for s in kept["scenes"]] == ["scene_20200101"]
    named = [*kept["files"].values(), *(name for segment in kept["segments"] for name in segment["files"].values())]
    assert sorted(p.name for p in idx.iterdir()) == sorted(["index.json", *named])  # the rewritten segment's old files are gone
    hits = run("query", idx, "--patch-id", "scene_20200101:1:1", "-k", "20", "--qe", "0")
    assert hits.exit_code == 0, hits.output
    ids = [f["properties"]["patch_id"] for f in json.loads(hits.stdout)["features"]]
    assert len(ids) == 16 and all(i.startswith("scene_20200101:") for i in ids)
    assert ids[0] == "scene_20200101:1:1"
    assert run("check", idx).exit_code == 0
    last = run("index", "remove", idx, "--date", "20200101")
    assert last.exit_code == 2 and "every scene" in last.output


# ------------------------------------------------------------ inputs and runs
def test_a_glob_of_multi_band_files_is_several_scenes(base, tmp_path):
    for name in ("scene_20200101.tif", "scene_20210101.tif"):
        shutil.copy(base / name, tmp_path / name)
    result = run("tile", str(tmp_path / "*.tif"), *MODEL[:4], "-o", tmp_path / "tiles.parquet")
    assert result.exit_code == 0, result.output
    assert "scene_20200101: 16, scene_20210101: 16" in result.stderr


def test_index_of_only_unreadable_scenes_is_refused_and_leaves_nothing(base, tmp_path):
    broken = tmp_path / "broken_20200101.tif"
    broken.write_bytes((base / "scene_20200101.tif").read_bytes()[:2000])  # a truncated download
    other = tmp_path / "other_20200101.tif"
    other.write_bytes(b"not a raster")
    result = run("index", "build", broken, other, *MODEL, "-o", tmp_path / "idx")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "idx").exists()


def test_stale_staging_of_a_killed_run_is_cleaned(base, tmp_path):
    work = _prepare(base, "query (3 outputs)", tmp_path / "work")
    staging = work / "idx" / ".staging"
    (staging / ".scene_x-half-written.abc123").mkdir(parents=True)  # a stage a kill -9 interrupted mid-write
    (staging / "other_scene-0123456789abcdef-key-grid").mkdir()  # staged by a killed run of another scene
    result = run("index", "build", base / "scene_20210101.tif", "--align", *MODEL, "-o", work / "idx")
    assert result.exit_code == 0, result.output
    assert not staging.exists()


def test_every_option_has_a_help_line():
    import click

    def commands(group, prefix=()):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, (*prefix, name))
            else:
                yield (*prefix, name), command

    missing = [f"{' '.join(path)} {param.opts[0]}" for path, command in commands(cli) for param in command.params
               if isinstance(param, click.Option) and not param.help and param.name != "help"]  # fmt: skip
    assert missing == []


def test_third_party_loggers_are_quiet_unless_verbose():
    import logging

    assert run("info", "--help").exit_code == 0
    assert logging.getLogger("distributed").getEffectiveLevel() >= logging.WARNING
    assert run("-v", "info", "--help").exit_code == 0
    assert logging.getLogger("distributed").getEffectiveLevel() <= logging.INFO
