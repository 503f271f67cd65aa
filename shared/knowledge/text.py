"""Documents to passages: text extraction, heading-aware chunking, and the tokenizer BM25 uses.

Chunks are ~300-600 characters (characters, not bytes, so Chinese and English chunk alike):
Markdown is cut at headings first, then at paragraphs, then at sentences (。！？；, or .!?; followed
by a space), and only a sentence longer than a chunk is cut mid-text. A chunk under a heading
starts with that heading's line; a section continued in a second chunk repeats the previous
chunk's last short sentence (a little overlap). Small neighbouring chunks are merged.

Tokens: CJK runs are cut by jieba's search mode (words and their sub-words: 退款政策 → 退款, 政策,
退款政策); everything else is split into letters-and-digits words, lowercased, with a light plural
strip (refunds → refund). A short stopword list (English and Chinese) is dropped. The same
function tokenizes documents and queries.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections import Counter

MIN_CHARS = 300
MAX_CHARS = 600
OVERLAP_CHARS = 120

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
_SENTENCE = re.compile(r"(?<=[。！？；])|(?<=[.!?;:])\s+|\n")

STOPWORDS = frozenset("""
a an the of to and or is are was were be been being in on at for with by from as it its this that
these those i you we they he she me my our your their do does did can could would should will shall
may might have has had not but if then so than there here what which who whom how when where why
please any some into about also just very
的 了 和 与 及 是 在 就 都 而 或 也 吗 呢 吧 啊 呀 我 你 您 他 她 它 我们 你们 他们 这 那 这个 那个 有 被 把
对 于 之 等 请 怎么 什么 如何 哪些 可以 一个 没有 会 要 还 吗
""".split())

_jieba_lock = threading.Lock()
_jieba = None


def _cutter():
    """jieba, loaded on first use (its dictionary takes ~0.5 s once per process, cached in /tmp)."""
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba = jieba
    return _jieba


def _norm_word(w: str) -> str:
    if len(w) > 3 and w.endswith("ies") and w.isascii():
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss") and w.isascii() and w.isalpha():
        return w[:-1]
    return w


def tokenize(text: str) -> list[str]:
    """Search tokens of `text`: jieba words for Chinese, lowercased words otherwise."""
    out: list[str] = []
    text = text.lower()
    pos = 0
    for m in _CJK.finditer(text):
        _latin(text[pos:m.start()], out)
        for w in _cutter().cut_for_search(m.group(0)):
            if w not in STOPWORDS:
                out.append(w)
        pos = m.end()
    _latin(text[pos:], out)
    return out


def _latin(segment: str, out: list[str]) -> None:
    for w in _WORD.findall(segment):
        if w in STOPWORDS or (len(w) == 1 and not w.isdigit()):
            continue
        out.append(_norm_word(w))


def term_frequencies(text: str) -> tuple[dict[str, int], int]:
    tokens = tokenize(text)
    return dict(Counter(tokens)), len(tokens)


# --- extraction ----------------------------------------------------------------------------

TEXT_TYPES = {".md": "markdown", ".markdown": "markdown", ".txt": "text"}


def pdf_supported() -> bool:
    """.pdf is accepted only where the pypdf library is installed."""
    return importlib.util.find_spec("pypdf") is not None


def supported_types() -> list[str]:
    return list(TEXT_TYPES) + ([".pdf"] if pdf_supported() else [])


def kind_of(path: str) -> str | None:
    """'markdown', 'text' or 'pdf' by the path's suffix; None when the type is not supported."""
    lower = path.lower()
    for suffix, kind in TEXT_TYPES.items():
        if lower.endswith(suffix):
            return kind
    if lower.endswith(".pdf") and pdf_supported():
        return "pdf"
    return None


def unsupported_message(path: str) -> str:
    dot = path.rfind(".")
    suffix = path[dot:].lower() if dot > path.rfind("/") else "(none)"
    msg = f"unsupported document type {suffix!r}: supported types are {', '.join(supported_types())}"
    if suffix == ".pdf":
        msg += " (.pdf needs the pypdf library, which this deployment does not have)"
    return msg


class ExtractError(ValueError):
    pass


def extract(data: bytes, kind: str) -> str:
    """The text of a document's bytes. Raises ExtractError naming what is wrong."""
    if kind == "pdf":  # only reachable when pypdf is installed (kind_of checks)
        import io

        import pypdf

        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
            return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)
        except Exception as e:  # pypdf raises many kinds on a broken file
            raise ExtractError(f"not a readable PDF: {str(e)[:120]}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ExtractError(f"not UTF-8 text (byte {e.start})") from None
    if "\x00" in text:
        raise ExtractError("not text: it contains NUL characters")
    return text


# --- chunking ------------------------------------------------------------------------------


def _sections(text: str, markdown: bool) -> list[tuple[str, list[str]]]:
    """(heading line, paragraphs) per section; fenced code blocks stay one paragraph."""
    sections: list[tuple[str, list[str]]] = []
    heading, paras, cur = "", [], []
    fence = None

    def end_para():
        if cur and "".join(cur).strip():
            paras.append("\n".join(cur).strip("\n"))
        cur.clear()

    for line in text.split("\n"):
        if markdown:
            fm = _FENCE.match(line.strip())
            if fence:
                cur.append(line)
                if fm and line.strip().startswith(fence):
                    fence = None
                    end_para()
                continue
            if fm:
                end_para()
                fence = fm.group(1)
                cur.append(line)
                continue
            hm = _HEADING.match(line)
            if hm:
                end_para()
                if paras or heading:
                    sections.append((heading, paras))
                heading, paras = line.strip(), []
                continue
        if not line.strip():
            end_para()
        else:
            cur.append(line.rstrip())
    end_para()
    if paras or heading:
        sections.append((heading, paras))
    return sections


def _units(paragraph: str, limit: int) -> list[str]:
    """A paragraph as pieces of at most `limit` characters: itself, or its sentences, or cuts."""
    if len(paragraph) <= limit:
        return [paragraph]
    out: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        sentence = sentence.strip()
        if not sentence:
            continue
        while len(sentence) > limit:
            out.append(sentence[:limit])
            sentence = sentence[limit - OVERLAP_CHARS // 2:]
        out.append(sentence)
    return out


def _last_sentence(text: str) -> str:
    parts = [p.strip() for p in _SENTENCE.split(text) if p and p.strip()]
    return parts[-1] if parts else ""


def chunk(text: str, kind: str = "markdown") -> list[dict]:
    """[{text, heading}] for a document's text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    chunks: list[dict] = []
    for heading, paras in _sections(text, kind == "markdown"):
        prefix = heading[:MAX_CHARS // 3] + "\n\n" if heading else ""
        limit = MAX_CHARS - len(prefix)
        body: list[str] = []
        size = 0
        started = False
        for para in paras:
            for unit in _units(para, limit):
                extra = len(unit) + (2 if body else 0)
                if body and size + extra > limit:
                    chunks.append({"text": prefix + "\n\n".join(body), "heading": heading})
                    started = True
                    tail = _last_sentence(body[-1])
                    fits = tail and len(tail) <= OVERLAP_CHARS and tail != unit and len(tail) + 2 + len(unit) <= limit
                    body = [tail] if fits else []
                    size = len(body[0]) if body else 0
                    extra = len(unit) + (2 if body else 0)
                body.append(unit)
                size += extra
        if body:
            chunks.append({"text": prefix + "\n\n".join(body), "heading": heading})
        elif heading and not started:
            chunks.append({"text": prefix.strip(), "heading": heading})
    # merge small neighbours (a short section joins the next one when both fit)
    merged: list[dict] = []
    for c in chunks:
        if merged and len(merged[-1]["text"]) < MIN_CHARS and len(merged[-1]["text"]) + 2 + len(c["text"]) <= MAX_CHARS:
            last = merged[-1]
            merged[-1] = {"text": last["text"] + "\n\n" + c["text"], "heading": last["heading"] or c["heading"]}
        else:
            merged.append(c)
    return [c for c in merged if c["text"].strip()]
