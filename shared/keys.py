"""Every object key troupe reads or writes, built here and only here, from validated parts.

  conversations/<cid>/meta.json                        scenario, input, limits (create-only)
  conversations/<cid>/messages/<turn>-<msgid>.json     committed turns (create-only)
  conversations/<cid>/state/<role>.json                a role's MetaGPT state (overwritten)
  conversations/<cid>/journal/<trigger>-<n>.json       LLM replies keyed by trigger (create-only)
  conversations/<cid>/claims/<trigger>-<n>.json        who pays for that call now (create-only)
  conversations/<cid>/invocations/<start>-<reqid>.json invocations that committed no turn
  conversations/<cid>/decisions/<delivery>.json        the director's choice for a delivery (create-only)
  conversations/<cid>/waiting/<turn>.json              a wait for a human after <turn> (create-only)
  conversations/<cid>/blobs/<sha256>                   workspace file contents (create-only)
  conversations/<cid>/workspace/<turn>-<msgid>.json    the project tree after a turn (create-only)
  conversations/<cid>/artifacts/<path>                 the final project files
  conversations/<cid>/progress.json                    the step an SOP role pays an LLM call for, or
                                                       a turn waiting for the model's rate limit
  conversations/<cid>/end.json                         terminal status (create-only, first wins)
  inbox/<function>/<cid>/<turn>-<msgid>.json           deliveries: these fire the OSS triggers
  requests/<name>.json, results/<name>.json            the pipeline's request files and results
  deadletters/<function>/<cid>/<turn>-<msgid>.json     events whose retries ran out
  scenarios/<id>.json                                  scenarios added over the API
  idempotency/<hmac>.json                              the conversation a start's Idempotency-Key made
  knowledge/<kb>/docs/<path>                           knowledge-base documents
  knowledge-index/<kb>/...                             their index (manifests, document files)
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from shared.errors import BadRequest, RejectedEvent
from shared.ids import check_conversation_id, check_message_id, check_name

TURN_WIDTH = 6
CONVERSATIONS = "conversations/"
INBOX = "inbox/"
REQUESTS = "requests/"
RESULTS = "results/"
DEADLETTERS = "deadletters/"
SCENARIOS = "scenarios/"
DOCS_ROOT = "knowledge/"
INDEX_ROOT = "knowledge-index/"

MAX_PATH_CHARS = 256
"""of a knowledge document's path"""
GEN_SPACE = 10 ** 12
"""knowledge manifests are named by GEN_SPACE - 1 - generation, so the newest lists first"""


def turn_name(turn: int, msgid: str) -> str:
    return f"{turn:0{TURN_WIDTH}d}-{msgid}"


# -- a conversation's objects ------------------------------------------------------------------

def conversation(cid: str) -> str:
    return f"{CONVERSATIONS}{check_conversation_id(cid)}/"


def meta(cid: str) -> str:
    return conversation(cid) + "meta.json"


def end(cid: str) -> str:
    return conversation(cid) + "end.json"


_END = re.compile(r"^conversations/([^/]+)/end\.json$")


def end_of(key: str) -> str | None:
    """The conversation id of an end marker's key, else None."""
    m = _END.match(key)
    return m.group(1) if m else None


def progress(cid: str) -> str:
    return conversation(cid) + "progress.json"


def messages(cid: str) -> str:
    return conversation(cid) + "messages/"


def before_turn(turn: int) -> str:
    """The messages cursor (`<turn>-<msgid>`) just before the first message of `turn`."""
    return f"{int(turn) - 1:0{TURN_WIDTH}d}-{'f' * 16}"


def turn_messages(cid: str, turn: int) -> str:
    """The prefix of every message committed at `turn` (a panel's answers share one turn)."""
    return messages(cid) + f"{int(turn):0{TURN_WIDTH}d}-"


def message(cid: str, turn: int, msgid: str) -> str:
    return messages(cid) + turn_name(turn, check_message_id(msgid)) + ".json"


def state(cid: str, role: str) -> str:
    return conversation(cid) + f"state/{check_name(role, 'role')}.json"


def journal(cid: str, trigger: str, n: int) -> str:
    return conversation(cid) + f"journal/{check_message_id(trigger)}-{n:03d}.json"


def claim(cid: str, trigger: str, n: int) -> str:
    return conversation(cid) + f"claims/{check_message_id(trigger)}-{n:03d}.json"


def decision(cid: str, delivery_id: str) -> str:
    return conversation(cid) + f"decisions/{check_message_id(delivery_id)}.json"


def invocations(cid: str) -> str:
    return conversation(cid) + "invocations/"


def invocation(cid: str, start: float, request_id: str) -> str:
    rid = re.sub(r"[^A-Za-z0-9_-]", "", str(request_id))[:64] or "none"
    return invocations(cid) + f"{int(start * 1000):015d}-{rid}.json"


def waiting_prefix(cid: str) -> str:
    return conversation(cid) + "waiting/"


def waiting(cid: str, turn: int) -> str:
    return waiting_prefix(cid) + f"{int(turn):0{TURN_WIDTH}d}.json"


def blob(cid: str, sha: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha or ""):
        raise BadRequest("a blob is named by its sha256", field="sha256")
    return conversation(cid) + f"blobs/{sha}"


def workspaces(cid: str) -> str:
    return conversation(cid) + "workspace/"


def workspace(cid: str, turn: int, msgid: str) -> str:
    return workspaces(cid) + f"{turn_name(turn, check_message_id(msgid))}.json"


def joined_workspace(cid: str, turn: int, msgid: str) -> str:
    """The tree a join merged from the branches of `turn`: after their own trees in key order
    ("~" sorts after "-"), so the newest key is the newest tree (shared/artifacts.latest_manifest)."""
    return workspaces(cid) + f"{int(turn):0{TURN_WIDTH}d}~{check_message_id(msgid)}.json"


def artifacts(cid: str) -> str:
    return conversation(cid) + "artifacts/"


def artifact(cid: str, path: str) -> str:
    """`path` must already be checked as a safe relative path (shared.artifacts.check_path)."""
    return artifacts(cid) + path


# -- deliveries --------------------------------------------------------------------------------

def inbox(function: str) -> str:
    return f"{INBOX}{check_name(function, 'function')}/"


def delivery(function: str, cid: str, turn: int, msgid: str) -> str:
    check_conversation_id(cid)
    return inbox(function) + f"{cid}/{turn_name(turn, check_message_id(msgid))}.json"


def parse_delivery(function: str, key: str) -> tuple[str, int, str]:
    """(cid, turn, msgid) of a delivery key under this function's inbox, else RejectedEvent."""
    prefix = inbox(function)
    if not isinstance(key, str) or not key.startswith(prefix):
        raise RejectedEvent(f"key is outside this function's inbox prefix {prefix!r}", key=str(key)[:200])
    rest = key[len(prefix):].split("/")
    if len(rest) != 2 or not rest[1].endswith(".json"):
        raise RejectedEvent("delivery key must be inbox/<function>/<cid>/<turn>-<msgid>.json", key=key[:200])
    cid, name = rest[0], rest[1][:-5]
    turn_s, _, msgid = name.partition("-")
    try:
        check_conversation_id(cid)
        check_message_id(msgid)
    except BadRequest as e:
        raise RejectedEvent(f"bad delivery key: {e.message}", key=key[:200]) from None
    if len(turn_s) != TURN_WIDTH or not turn_s.isdigit():
        raise RejectedEvent("bad turn number in delivery key", key=key[:200])
    return cid, int(turn_s), msgid


def deadletter(function: str, cid: str, turn: int, msgid: str) -> str:
    return f"{DEADLETTERS}{check_name(function, 'function')}/{check_conversation_id(cid)}/" \
           f"{turn_name(turn, check_message_id(msgid))}.json"


# -- the pipeline and the scenario catalog -------------------------------------------------------

_RESULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}\.json$")


def result(request_key: str) -> str:
    """results/<name>.json for requests/<name>.json; a name that is not safe gets a digest."""
    name = request_key[len(REQUESTS):] if request_key.startswith(REQUESTS) else ""
    if not _RESULT_NAME.match(name) or ".." in name.split("/") or "//" in name:
        name = "rejected/" + hashlib.sha256(request_key.encode("utf-8", "replace")).hexdigest()[:32] + ".json"
    return RESULTS + name


def idempotency(name: str) -> str:
    """A start's Idempotency-Key record; `name` is an HMAC of the key (hex)."""
    if not re.fullmatch(r"[0-9a-f]{64}", name or ""):
        raise BadRequest("an idempotency record is named by an HMAC-SHA256")
    return f"idempotency/{name}.json"


def user_scenario(sid: str) -> str:
    return f"{SCENARIOS}{check_name(sid, 'scenario id')}.json"


# -- knowledge bases ---------------------------------------------------------------------------

_SEGMENT = re.compile(r"^[\w()+,@&=~-][\w .()+,@&=~-]*$")


def check_kb(kb) -> str:
    return check_name(kb, "knowledge base name")


def check_path(path, *, check_type: bool = True) -> str:
    """A document path relative to the kb's docs/ prefix: normalised, no '..', a supported type."""
    if not isinstance(path, str) or not path:
        raise BadRequest("document path must be a non-empty string", field="path")
    if len(path) > MAX_PATH_CHARS:
        raise BadRequest(f"document path is longer than {MAX_PATH_CHARS} characters", field="path")
    if path.startswith("/"):
        raise BadRequest("document path must be relative (no leading '/')", field="path", path=path[:80])
    for seg in path.split("/"):
        if seg in ("", ".", ".."):
            raise BadRequest("document path must be normalised: no empty, '.' or '..' segments",
                             field="path", path=path[:80])
        if not _SEGMENT.match(seg) or seg.endswith((" ", ".")):
            raise BadRequest("document path segments take letters, digits, spaces and _ - . ( ) + , @ & = ~, "
                             "and may not start with '.' or ' ' or end with '.' or ' '", field="path", path=path[:80])
    if check_type:
        from shared.knowledge import text as textmod

        if textmod.kind_of(path) is None:
            raise BadRequest(textmod.unsupported_message(path), field="path", path=path[:80])
    return path


def docs_prefix(kb: str) -> str:
    return f"{DOCS_ROOT}{check_kb(kb)}/docs/"


def doc_key(kb: str, path: str) -> str:
    return docs_prefix(kb) + check_path(path, check_type=False)


def parse_doc_key(key: str) -> tuple[str, str] | None:
    """(kb, path) for a document key `knowledge/<kb>/docs/<path>`, else None.

    Document paths never contain '%', so an event key with one is URL-encoded and is decoded."""
    if "%" in key:
        key = unquote(key)
    parts = key.split("/", 3)
    if len(parts) != 4 or parts[0] + "/" != DOCS_ROOT or parts[2] != "docs":
        return None
    try:
        return check_kb(parts[1]), check_path(parts[3], check_type=False)
    except BadRequest:
        return None


def index_prefix(kb: str) -> str:
    return f"{INDEX_ROOT}{check_kb(kb)}/"


def manifest_prefix(kb: str) -> str:
    return index_prefix(kb) + "manifest/"


def manifest_key(kb: str, gen: int) -> str:
    return manifest_prefix(kb) + f"{GEN_SPACE - 1 - gen:012d}.json"


def docfiles_prefix(kb: str, path: str) -> str:
    return index_prefix(kb) + f"docs/{hashlib.sha256(path.encode('utf-8')).hexdigest()[:32]}/"


def docfile_key(kb: str, path: str, file_id: str) -> str:
    """The key of a document's index file; `file_id` is `<sha(content)[:16]>-<nonce>`."""
    return docfiles_prefix(kb, path) + f"{file_id}.json"
