import os
import stat

from lmforge.io import atomic_dir, atomic_path, write_json


def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "folder", "model") as folder:
            (folder / "f").write_text("x")
        os.umask(0o077)
        with atomic_path(tmp_path / "private.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644  # mkstemp alone would leave 0600
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755  # mkdtemp alone would leave 0700
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_a_failed_block_leaves_no_file(tmp_path):
    target = tmp_path / "out.txt"
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_marks_its_folder_and_replaces_only_its_own_kind_with_overwrite(tmp_path):
    import pytest

    from lmforge.errors import LmforgeError
    from lmforge.io import artifact_kind

    target = tmp_path / "m"
    with atomic_dir(target, "model") as folder:
        (folder / "w").write_text("1")
    assert artifact_kind(target) == "model"
    with pytest.raises(LmforgeError, match="--overwrite"), atomic_dir(target, "model") as folder:
        (folder / "w").write_text("2")
    with pytest.raises(LmforgeError, match="holds an lmforge model"), atomic_dir(target, "checkpoint", overwrite=True):
        pass
    with atomic_dir(target, "model", overwrite=True) as folder:
        (folder / "w").write_text("3")
    assert (target / "w").read_text() == "3"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp or old folder left beside it


def test_a_folder_lmforge_did_not_write_is_never_replaced(tmp_path):
    import pytest

    from lmforge.errors import LmforgeError

    mine = tmp_path / "d"
    mine.mkdir()
    (mine / "keep").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(LmforgeError, match="did not write"), atomic_dir(mine, "model", overwrite=overwrite):
            pass
    assert (mine / "keep").read_text() == "mine" and [p.name for p in mine.iterdir()] == ["keep"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty, "model") as folder:  # an empty folder holds nothing to lose
        (folder / "w").write_text("1")
    assert (empty / "w").is_file()


def test_protected_folders_are_refused_even_with_overwrite(tmp_path, monkeypatch):
    import pytest

    from lmforge.errors import LmforgeError
    from lmforge.io import check_output_dir, mark_artifact

    project = tmp_path / "project"
    (project / "inputs").mkdir(parents=True)
    (project / "inputs" / "model.gguf").write_text("x")
    mark_artifact(project, "model")  # even a folder marked as a model
    monkeypatch.chdir(project)
    monkeypatch.setenv("LMFORGE_HOME", str(project / ".lmforge"))
    for path, why in ((".", "working directory"), ("..", "working directory"), (".lmforge", "run store"),
                      ("inputs", "the input")):
        with pytest.raises(LmforgeError, match=why):
            check_output_dir(path, "model", overwrite=True, inputs=["inputs/model.gguf"])


def test_output_files_are_checked_before_the_work(tmp_path):
    import pytest

    from lmforge.errors import LmforgeError
    from lmforge.io import check_output_file, check_writable

    with pytest.raises(LmforgeError, match="is a folder"):
        check_writable(tmp_path, "--json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LmforgeError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "out.json")
    with pytest.raises(LmforgeError, match="--overwrite"):
        check_output_file(tmp_path / "file")
    with pytest.raises(LmforgeError, match="also the input"):
        check_output_file(tmp_path / "file", overwrite=True, inputs=[str(tmp_path / "file")])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: nothing to check here
            return
        with pytest.raises(LmforgeError, match="no write permission"):
            check_writable(locked / "out.json")
    finally:
        locked.chmod(0o700)


def test_temp_files_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale_dir = tmp_path / f".m.{dead_pid}.abc_1234.tmp"
    stale_dir.mkdir()
    (stale_dir / "half").write_text("x")
    stale_file = tmp_path / f".out.txt.{dead_pid}.xyz98765.tmp"
    stale_file.write_text("x")
    live = tmp_path / f".m.{os.getpid()}.livelive.tmp"
    live.mkdir()
    other_output = tmp_path / f".m.5.{os.getpid()}.abcdefgh.tmp"  # a live writer of a folder named `m.5`
    other_output.mkdir()
    with atomic_dir(tmp_path / "m", "model") as folder:
        (folder / "w").write_text("1")
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("ok")
    assert not stale_dir.exists() and not stale_file.exists() and live.exists() and other_output.exists()


def test_folders_written_before_the_marker_are_still_recognised(tmp_path):
    from lmforge.io import artifact_kind

    model = tmp_path / "old-model"
    model.mkdir()
    (model / "lmforge.json").write_text("{}")
    (model / "config.json").write_text("{}")
    training = tmp_path / "old-train"
    (training / "checkpoints" / "step-000010").mkdir(parents=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert [artifact_kind(p) for p in (model, training, plain)] == ["model", "training run", None]
