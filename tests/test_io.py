import os
import stat

from lmforge.io import atomic_dir, atomic_path, write_json


def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "folder") as folder:
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
