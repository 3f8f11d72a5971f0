"""Safe file writing and dataset reading shared by every step.

Writes go to a temporary file in the same folder and are renamed into place, so an interrupted or
failed run leaves the old file as it was. Dataset files are JSON arrays or JSONL; errors name the
file and the line.
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import UserError


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (others: set and restored)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def missing_parents(folder: Path) -> list[Path]:
    """The folders that mkdir(parents=True) would create for `folder`, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path`, on error it is removed
    (with any folder made for it).

    The file gets the mode a plain open() would give it (an existing file's own mode, else 0666 less
    the umask), not the temporary file's 0600.
    """
    path = Path(path)
    if path.is_symlink():  # replace the file the link points to (a dataset linked into the webui), not the link
        path = Path(os.path.realpath(path))
    made = missing_parents(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            file_mode = path.stat().st_mode & 0o7777
        except OSError:
            file_mode = default_file_mode()
        _clear_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _try_lock(fd)  # in use: see _clear_stale_temps
    except BaseException:
        remove_empty(made)
        raise
    if "b" in mode:
        encoding = None
    try:
        os.chmod(tmp, file_mode)  # by name: os.fchmod is missing on Windows before Python 3.13
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            flush_to_disk(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        remove_empty(made)
        raise


STALE_TEMP_S = 60.0


def _clear_stale_temps(path: Path) -> None:
    """Remove the temporary files that writers of `path` killed mid-write left (a prepare killed while
    writing left hundreds of megabytes, hidden): those no process holds locked (a writer locks its own
    while it writes) that have not changed for STALE_TEMP_S."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")  # tempfile.mkstemp's names
    try:
        entries = [e for e in os.scandir(path.parent) if pattern.fullmatch(e.name)]
    except OSError:
        return
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False) or time.time() - entry.stat().st_mtime < STALE_TEMP_S:
                continue
            fd = os.open(entry.path, os.O_RDWR)
        except OSError:
            continue
        try:
            free = _try_lock(fd)
        finally:
            os.close(fd)
        if free:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


# A script or a day of a chat export is a few MB: a zip member that unpacks to more is not one (a zip bomb
# of a few MB unpacked to gigabytes, and memory ran out)
ZIP_MEMBER_LIMIT = 256 * 2**20


def read_zip_member(z, name: str, where: str) -> bytes:
    """A zip member's bytes, or one line saying why not (too large unpacked, encrypted, a compression this
    Python lacks, damaged). `where` names it in the message."""
    import zipfile
    import zlib

    limit = ZIP_MEMBER_LIMIT
    try:
        with z.open(name) as f:  # read to the limit: the size a zip states may lie
            data = f.read(limit + 1)
    except NotImplementedError as e:  # (before RuntimeError, whose kind it is): AES, LZMA-less builds...
        raise UserError(f"{where}: packed in a way this Python cannot unpack ({e}): zip it again as a plain zip"
                        ) from None
    except RuntimeError as e:  # encrypted
        raise UserError(f"{where}: cannot be read ({e}): zip it again without a password") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as e:
        raise UserError(f"{where}: damaged in the zip ({str(e)[:80] or type(e).__name__}): download or export it "
                        "again") from None
    if len(data) > limit:
        raise UserError(f"{where}: unpacks to more than {limit // 2**20} MB, which no script or chat export holds: "
                        "not read (unzip it, and give what is inside)")
    return data


def flush_to_disk(fd: int) -> None:
    """os.fsync, and on macOS F_FULLFSYNC: its fsync leaves the data in the drive's own cache, which a power
    cut loses (a file system that cannot do it, a network share, gets the fsync)."""
    if sys.platform == "darwin":
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
    os.fsync(fd)


def sync_folder(folder: Path, files: bool = True) -> None:
    """Flush a folder's files (unless `files` is False) and its entries to the disk: before it is renamed
    into place, so that after a power loss a folder marked complete holds the weights it names; and the
    folder holding it after the rename, before what it replaces is deleted."""
    # Windows flushes only a file opened for writing (on one opened to read: "Bad file descriptor")
    mode = "r+b" if os.name == "nt" else "rb"
    for f in folder.iterdir() if files else ():
        if f.is_file() and not f.is_symlink():
            with open(f, mode) as handle:
                flush_to_disk(handle.fileno())
    with contextlib.suppress(OSError):  # Windows cannot open a folder; its renames are flushed with it
        fd = os.open(folder, os.O_RDONLY)
        try:
            flush_to_disk(fd)
        finally:
            os.close(fd)


# On Windows a folder cannot be renamed while any process has a file in it open: an antivirus scanner or the
# search indexer reading what was just written, Explorer's preview, a console whose folder it is. Such holds
# last moments, so a rename there is tried again for about 5 s before its error stands (as pip does).
RENAME_TRIES, RENAME_WAIT_S = 10, 0.5


def replace_folder(src: Path, dst: Path) -> None:
    """os.replace for a folder (or an entry in one), tried again on Windows while another process holds it."""
    tries = RENAME_TRIES if os.name == "nt" else 1
    for attempt in range(tries):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt + 1 >= tries:
                raise
            time.sleep(RENAME_WAIT_S)


def remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):  # not empty (someone else wrote there) or already gone
            folder.rmdir()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


_ENCODER = json.JSONEncoder(ensure_ascii=False)


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write samples atomically: one JSON object a line when the name ends in .jsonl, else a JSON array.

    Streams (never holds the serialised file in memory); returns the number written.
    """
    n = 0
    jsonl = str(path).lower().endswith(".jsonl")
    encode = _ENCODER.encode  # json.dumps(..., ensure_ascii=False) would build an encoder per record
    with atomic_open(path, "w") as f:
        if not jsonl:
            f.write("[")
        for rec in records:
            if jsonl:
                f.write(encode(rec))
                f.write("\n")
            else:
                f.write(",\n" if n else "\n")
                f.write(encode(rec))
            n += 1
        if not jsonl:
            f.write("\n]\n" if n else "]\n")
    return n


def keep_previous(path: Path) -> Path:
    """Keep `path` as NAME.bak beside it (an earlier .bak replaced) before it is replaced: a hard link
    where the file system has them (no copy of a large file), else a copy. Raises OSError."""
    import shutil

    backup = path.with_name(path.name + ".bak")
    tmp = path.with_name(f".{backup.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)
        os.replace(tmp, backup)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return backup


def save_stamp(folder: Path) -> tuple:
    """What tells one save of an adapter from the next: its weights' and settings' files as they are on disk
    (a final save swaps in a new folder, so the inode changes even within a file system's time resolution)."""
    stamp = []
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        try:
            st = (folder / name).stat()
        except OSError:
            stamp.append(None)
        else:
            stamp.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(stamp)


def file_sha256(path: str | os.PathLike) -> str:
    """A file's SHA-256, read in 1 MB pieces."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_error(path: Path, e: json.JSONDecodeError, line_offset: int = 0) -> UserError:
    return UserError(f"{path}:{e.lineno + line_offset}: malformed JSON ({e.msg}, column {e.colno})")


def nearest_existing(path: Path) -> Path | None:
    """`path` or its nearest ancestor that exists: where writing `path` would land, or fail."""
    return next((p for p in (path, *path.parents) if p.exists()), None)


def free_bytes(folder: Path) -> int | None:
    """Free space on the disk that holds `folder` (or would, once made); None when it cannot be told."""
    import shutil

    existing = nearest_existing(folder)
    try:
        return shutil.disk_usage(existing).free if existing is not None else None
    except OSError:
        return None


def _is_discord_export(data) -> bool:
    """A DiscordChatExporter file: an object with a "messages" list that is not a sample's turns (roles, or
    sharegpt's `from` in a messages list)."""
    messages = data.get("messages") if isinstance(data, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    # (Telegram's messages have a `from` too, the sender: sharegpt's turns have `value` beside it)
    turns = isinstance(first, dict) and ("role" in first or {"from", "value"} <= set(first))
    return isinstance(messages, list) and not turns


def is_utf16(head: bytes) -> bool:
    """Whether bytes open with UTF-16's byte-order mark (Windows' "Unicode", PowerShell 5's `>`)."""
    return head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))


def holds_samples(path: str | os.PathLike) -> bool | None:
    """Is this file a prepared dataset (samples as a JSON array or JSONL, judged by its first record)?
    None when it holds nothing (no bytes, an empty array) or cannot be read. One test for the tab's lists,
    prepare's guard on its output and the input check, so that they agree on what a dataset is."""
    from .prompt import is_sample

    for size in (1 << 16, 1 << 22):  # the first record is short; a longer head only if it is not
        try:
            with open(path, "rb") as f:
                head = f.read(size)
        except OSError:
            return None
        utf16 = is_utf16(head)  # (as load_records reads it)
        text = head.decode("utf-16" if utf16 else "utf-8-sig", "replace").lstrip()
        if not text:
            return None
        try:
            if text.startswith("["):
                rest = text[1:].lstrip()
                return None if rest.startswith("]") else is_sample(json.JSONDecoder().raw_decode(rest)[0])
            first, newline, _ = text.partition("\n")
            if first.strip() == "{" and len(head) < size:  # one object over several lines, all of it read
                return _holds(json.loads(text))
            if newline or len(head) < size:
                return _holds(json.loads(first))
        except ValueError:  # not JSON, or cut short by the head: try a longer head once
            if len(head) < size:
                return False
        except RecursionError:
            return False
    return False


class Records(list):
    """A dataset's samples, and where each one is in its file (for errors a user can find in an editor)."""

    def __init__(self, records, path: Path, lines: list[int] | None = None):
        super().__init__(records)
        self.path = path
        self.lines = lines  # JSONL: the line of each sample; a JSON array: None (samples are numbered)

    def where(self, i: int) -> str:
        """`data.jsonl:7` for a JSONL sample, `data.json: sample 3` (counted from 1) for an array's."""
        if self.lines is not None and i < len(self.lines):
            return f"{self.path}:{self.lines[i]}"
        return f"{self.path}: sample {i + 1}"


def _is_format_template(data) -> bool:
    """The webui Training tab's format file: `{"instruction,input,output": "... %instruction% ..."}`."""
    return (isinstance(data, dict) and bool(data) and all(isinstance(v, str) and "%" in v for v in data.values())
            and any("," in str(k) for k in data))


def _holds(record) -> bool:
    """A file's first record, or its one object, as what makes it a dataset: a sample, or samples in an
    object around them (as load_records reads them)."""
    from .prompt import is_sample

    return is_sample(record) or bool(isinstance(record, dict) and _unwrapped(record))


def _unwrapped(data: dict) -> list | None:
    """The samples of an object around them (`{"data": [...]}`, `{"train": [...]}`): its one list of
    objects, where the object is not a sample itself; None otherwise."""
    from .prompt import is_sample

    lists = [v for v in data.values() if isinstance(v, list)]
    if is_sample(data) or len(lists) != 1 or not lists[0] or not all(isinstance(r, dict) for r in lists[0]):
        return None
    return lists[0] if is_sample(lists[0][0]) else None


def load_records(path: str | os.PathLike) -> Records:
    """Read a dataset: a JSON array of objects, or JSONL (one object a line). Errors name file and line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a .json or .jsonl file")
    raw = path.read_bytes()
    utf16 = is_utf16(raw)  # Windows PowerShell 5's `>` writes UTF-16 so
    if b"\x00" in raw[:4096] and not utf16:
        raise UserError(f"{path}: looks like a binary file, expected JSON")
    try:
        text = raw.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        where = "" if utf16 else f":{line}"  # (UTF-16's line ends are two bytes)
        raise UserError(f"{path}{where}: not {'UTF-16' if utf16 else 'UTF-8'} text (byte {e.start}): save it as "
                        "UTF-8") from None
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    stripped = text.lstrip()
    records: list[Any]
    lines = None
    raw_dialogue = (f"{path}: not a prepared dataset (a JSON array or JSONL of samples): "
                    "prepare_dataset.py turns raw dialogue into one")
    if not stripped.startswith(("[", "{")):
        raise UserError(raw_dialogue)
    first_line = stripped[: stripped.find("\n")] if "\n" in stripped else stripped
    if stripped.startswith("[") or not first_line.rstrip().endswith("}"):
        try:  # an array, or one object over several lines: a single sample, or a Discord export
            records = json.loads(text)
        except json.JSONDecodeError as e:
            if e.pos >= len(text.rstrip()):  # the text ended first: say so at its last line, not the one after
                last = len(text.rstrip().splitlines())
                raise UserError(f"{path}:{last}: malformed JSON (it ends before a bracket or brace is closed)") from None
            if e.msg == "Extra data" and not stripped.startswith("[") and text[e.pos:e.pos + 1] == "{":  # `jq '.[]'`
                raise UserError(f"{path}:{e.lineno}: malformed JSON (a second object after the first, each over "
                                "several lines): write one sample a line (jq -c) or a JSON array") from None
            raise _json_error(path, e) from None
        except RecursionError:  # brackets nested thousands deep: no samples, and Python's own limit
            raise UserError(f"{path}: unreadable JSON (nested too deep to be samples)") from None
    else:
        records, lines = [], []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: malformed JSON line ({e.msg}, column {e.colno})") from None
            except RecursionError:
                raise UserError(f"{path}:{i}: unreadable JSON line (nested too deep to be a sample)") from None
            lines.append(i)
    if isinstance(records, dict):
        records = [records]
    if len(records) == 1 and isinstance(records[0], dict) and (inner := _unwrapped(records[0])):
        records, lines = inner, None  # (counted as samples: the file's lines are not theirs)
    if len(records) == 1 and _is_discord_export(records[0]):  # pretty-printed or on one line
        raise UserError(raw_dialogue.replace("raw dialogue", "a Discord export"))
    if len(records) == 1 and _is_format_template(records[0]):
        raise UserError(f"{path}: a text-generation-webui format template (its training/formats folder), not "
                        "samples: give the dataset")
    if len(records) == 1 and isinstance(records[0], dict) and {"evaluated_at", "samples"} <= set(records[0]):
        raise UserError(f"{path}: an evaluation's report (evaluate_lora.py's eval.json), not samples: give the "
                        "dataset, or the adapter's heldout.json")
    records = Records(records, path, lines)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            kind = {list: "list", str: "string", int: "number", float: "number", bool: "true/false"}.get(type(rec))
            raise UserError(f"{records.where(i)} is a {kind or 'null'}, expected a JSON object (one sample)")
    if not records:
        raise UserError(f"{path}: holds no samples")
    return records


def same_file(a, b) -> bool:
    """One file by two names: the same path, or (both there) a hard link or another case of the name."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
        return os.path.samefile(a, b)
    except (OSError, RuntimeError):  # not there yet; RuntimeError: a symlink loop before Python 3.13
        return False


def _try_lock(fd: int) -> bool:
    """Lock an open file for this process, without waiting; False if another process holds it."""
    import errno

    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        # a file system without locks (some network mounts): go on unlocked rather than never run
    return True


@contextlib.contextmanager
def held_lock(path: Path, busy: Callable[[str], str]):
    """Hold an exclusive lock on `path` while the block runs, the holder's process id written in it.

    The operating system drops the lock when its process dies, so a killed run never leaves a lock that
    blocks the next one, and two processes can never both hold it (a lock file alone cannot promise either:
    the pid is written after the file appears, and pids are reused). Held by another process:
    UserError(busy(its pid, or "" if unknown)).
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"{path}: cannot create the lock ({e.strerror or e})") from None
        if not _try_lock(fd):
            holder = _holder(fd)
            os.close(fd)
            raise UserError(busy(holder))
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # its previous holder removed the file as we opened it: lock the new one
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode("ascii"))
        except OSError as e:  # a full disk: the lock file was made, its few bytes cannot be written
            raise UserError(f"{path}: cannot write the lock ({e.strerror or e})") from None
        yield
    finally:
        with contextlib.suppress(OSError):  # while still held: whoever opened the old file sees it is gone
            os.unlink(path)
        os.close(fd)  # and the lock with it
        if os.name == "nt":  # Windows deletes no open file: now, unless another process has opened it since
            with contextlib.suppress(OSError):
                os.unlink(path)


def lock_holder(path: Path) -> str | None:
    """Whether a held_lock on `path` is held now: the holder's process id ("" when unreadable), or None when
    no process holds it (no file, or one a killed run left, whose pid may belong to another process since).
    Trying the lock holds it for an instant: a run starting at that very moment would be told it is busy."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        return None if _try_lock(fd) else _holder(fd)  # closing the descriptor releases a lock it took
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """The process id written in a lock file another process holds; "" when it cannot be read."""
    try:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:  # Windows refuses to read a locked range
        return ""
    return holder if holder.isascii() and holder.isdigit() else ""


def samples_sha256(records: list[dict], leave_out: tuple[str, ...] = ()) -> str:
    """The samples' content, whatever the file's layout (indentation, key order, .json or .jsonl); the keys
    in `leave_out` not counted (`source`: where prepare found a line, which training never reads)."""
    digest = hashlib.sha256()
    for r in records:
        if leave_out and isinstance(r, dict):
            r = {k: v for k, v in r.items() if k not in leave_out}
        digest.update(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
