"""A conversation's artifacts: the project files MetaGPT's software-company roles wrote.

Stored content-addressed (see shared/sop/workspace.py, which writes them):

  conversations/<cid>/blobs/<sha256>                    file contents (create-only)
  conversations/<cid>/workspace/<turn>-<msgid>.json     the whole tree after a turn: path → sha256
  conversations/<cid>/artifacts/<path>                  the final tree as plain objects (at the end)

This module reads them for the gateway without importing MetaGPT.
"""

from __future__ import annotations

import io
import json
import mimetypes
import posixpath
import zipfile

from shared import keys
from shared.conversation import ConversationStore
from shared.errors import BadRequest, NoSuchKey, NotFound
from shared.safe_paths import UnsafePath, check_relative

MAX_ZIP_BYTES = 20 * 1024 * 1024
TEXT_TYPES = {".md": "text/markdown", ".py": "text/x-python", ".json": "application/json", ".txt": "text/plain",
              ".mmd": "text/plain", ".yaml": "text/yaml", ".yml": "text/yaml", ".toml": "text/plain",
              ".cfg": "text/plain", ".ini": "text/plain", ".html": "text/plain", ".js": "text/plain",
              ".css": "text/plain", ".svg": "text/plain"}


def check_path(path: str) -> str:
    """A workspace path as the API and object keys take it: the rule of
    shared/safe_paths.check_relative, refused with a 400 naming the problem."""
    try:
        return check_relative(path, "path")
    except UnsafePath as e:
        raise BadRequest(f"bad artifact path {e.value}: {e.why}", field="path") from None


def blob_key(convs: ConversationStore, cid: str, sha: str) -> str:
    return keys.blob(cid, sha)


def manifest_key(convs: ConversationStore, cid: str, turn: int, msgid: str) -> str:
    return keys.workspace(cid, turn, msgid)


def latest_manifest(convs: ConversationStore, cid: str) -> dict | None:
    """The most recent saved tree of the conversation, or None if it has none."""
    last = None
    for info in convs.store.iter(keys.workspaces(cid)):
        last = info.key
    if last is None:
        return None
    return json.loads(convs.store.get(last))


def listing(manifest: dict | None) -> list[dict]:
    if not manifest:
        return []
    return [{"path": p, "size": i["size"], "sha256": i["sha256"], "type": content_type(p)}
            for p, i in sorted(manifest["files"].items())]


def content_type(path: str) -> str:
    ext = posixpath.splitext(path)[1].lower()
    return TEXT_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def read(convs: ConversationStore, cid: str, manifest: dict | None, path: str) -> bytes:
    info = (manifest or {}).get("files", {}).get(check_path(path))
    if info is None:
        raise NotFound(f"no artifact {path[:200]!r} in this conversation", field="path")
    return convs.store.get(blob_key(convs, cid, info["sha256"]))


def zip_bytes(convs: ConversationStore, cid: str, manifest: dict | None) -> bytes:
    """All artifacts in one zip, under the project's folder name."""
    buf = io.BytesIO()
    root = check_path((manifest or {}).get("root") or cid)
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, info in sorted((manifest or {}).get("files", {}).items()):
            total += info["size"]
            if total > MAX_ZIP_BYTES:
                raise BadRequest(f"the artifacts are larger than {MAX_ZIP_BYTES} bytes; fetch them one by one")
            z.writestr(f"{root}/{check_path(path)}", convs.store.get(blob_key(convs, cid, info["sha256"])))
    return buf.getvalue()


def export(convs: ConversationStore, cid: str, manifest: dict, read=None) -> None:
    """Copy a tree to `artifacts/<path>`: plain objects for people and pipelines. Idempotent.
    `read(sha)` gives a blob's bytes (default: from the store)."""
    read = read or (lambda sha: convs.store.get(blob_key(convs, cid, sha)))
    for path, info in manifest["files"].items():
        try:
            data = read(info["sha256"])
        except NoSuchKey:
            continue
        convs.store.put(keys.artifact(cid, check_path(path)), data)
