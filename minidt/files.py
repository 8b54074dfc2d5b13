"""Files written whole or not at all, and JSON files read with one clear error.

Everything minidt writes (checkpoints, configs, run files, plots, clips, kits) goes through `atomic_write`: the
bytes go to a temporary name beside the target, which is then renamed over it, so a crash leaves the old file or
the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: "str | os.PathLike", write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temporary file next to `path`, then rename it over `path`. The file gets the
    mode open() would give it under the user's umask (0644 under umask 022), whatever `write` does: tempfile.mkstemp
    and safetensors' save_file both make 0600 files, which a teammate cannot read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # O_EXCL: never someone else's file
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 less the umask, without changing the umask to read it
        write(str(tmp))
        os.chmod(tmp, mode)  # `write` may have replaced the file with one of its own
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: "str | os.PathLike", text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def read_json(path: "str | os.PathLike") -> Any:
    """json.loads of a file, every failure one ValueError naming the file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, expected a JSON file") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({str(e)[:80]})") from None
