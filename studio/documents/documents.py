"""Uploaded file → one text for the whole-document-in-context path, with its token count and read progress.

    doc = read_document("/tmp/upload/x", original_name="report.pdf", count_tokens=tokenizer_count, progress=cb)
    check_fits(doc.num_tokens, tokens_free, name=doc.name)

Formats: PDF, DOCX, XLSX, PPTX, HTML, Markdown, plain text, CSV/TSV, JSON and source code. The type comes from the
extension and from magic bytes (content wins for PDF and Office files). Every bad input raises `DocumentError`
whose message names the file; reading has no side effects, so a failure leaves nothing behind. `limits`
(studio.documents.limits) bounds the work: a file over a budget stops early with a DocumentError naming the limit.
For uploads from strangers read in a separate process: studio.documents.isolated.read_isolated.
"""
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from studio.documents import formats, text_formats, xlsx
from studio.documents.limits import DEFAULT_LIMITS, ReadLimits, check_text, check_zip
from studio.documents.text_formats import Unreadable

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
TOKEN_SLICE_CHARS = 1 << 20
# Estimate used when no tokenizer is injected. Measured with M1's merges: ASCII prose 4.5 chars/token, Python 3.9,
# README Markdown 2.7, numeric Markdown tables 1.8; Chinese 1.8. Off by up to ~±50% on ASCII; 'tokens_estimated'.
ASCII_CHARS_PER_TOKEN = 3.5
OTHER_CHARS_PER_TOKEN = 1.5

TEXT_EXTENSIONS = {".txt", ".text", ".log", ".rst", ".me", ".nfo"}
MARKDOWN_EXTENSIONS = {".md", ".markdown", ".mdx"}
HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}
CSV_EXTENSIONS = {".csv": None, ".tsv": "\t"}
BINARY_KINDS = {".pdf": "pdf", ".docx": "docx", ".xlsx": "xlsx", ".xlsm": "xlsx", ".pptx": "pptx"}
CODE_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "jsx", ".ts": "typescript", ".tsx": "tsx", ".java": "java", ".c": "c", ".h": "c", ".cc": "cpp",
    ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".cu": "cuda", ".cs": "csharp", ".go": "go", ".rs": "rust",
    ".rb": "ruby", ".php": "php", ".swift": "swift", ".kt": "kotlin", ".scala": "scala", ".sh": "bash",
    ".bash": "bash", ".zsh": "zsh", ".ps1": "powershell", ".sql": "sql", ".r": "r", ".lua": "lua", ".pl": "perl",
    ".dart": "dart", ".jl": "julia", ".hs": "haskell", ".ml": "ocaml", ".ex": "elixir", ".erl": "erlang",
    ".clj": "clojure", ".vue": "vue", ".svelte": "svelte", ".css": "css", ".scss": "scss", ".less": "less",
    ".xml": "xml", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".ini": "ini", ".cfg": "ini",
    ".proto": "protobuf", ".graphql": "graphql", ".tex": "latex", ".jsonl": "jsonl", ".ipynb": "json",
    ".cmake": "cmake", ".mk": "makefile", ".bat": "batch", ".zig": "zig", ".nim": "nim", ".v": "verilog",
}
CODE_FILENAMES = {"dockerfile": "dockerfile", "makefile": "makefile", "cmakelists.txt": "cmake"}
SUPPORTED = "PDF, DOCX, XLSX, PPTX, HTML, Markdown, text, CSV, JSON or source code"
_UNSUPPORTED_CONTENT = {
    "legacy-office": "is a legacy Office file (.doc/.xls/.ppt): save it as .docx, .xlsx or .pptx and upload it again",
    "image": "is an image; images are not supported (there is no OCR)",
    "archive": "is an archive (ZIP, gzip, 7z or RAR): upload the files inside it instead",
}


@dataclass(frozen=True)
class Document:
    """Extracted text of one upload. `sections` counts pages, sheets, slides or headings (see `section_label`)."""

    name: str
    kind: str
    text: str = field(repr=False)
    num_bytes: int
    num_tokens: int
    tokens_estimated: bool
    sections: int
    section_label: str
    language: str = ""
    encoding: str = ""

    @property
    def num_chars(self) -> int:
        """Characters of extracted text."""
        return len(self.text)


class ReadProgress(NamedTuple):
    """Progress of one reading stage: 'pages' | 'sheets' | 'slides' | 'parse' | 'tokens' (done/total in chars)."""

    done: int
    total: int
    stage: str


class DocumentError(ValueError):
    """A user-facing reason why an upload cannot be used; the message starts with the file name."""


class ContextOverflowError(DocumentError):
    """The document does not fit in the tokens left in the context window."""

    def __init__(self, message: str, tokens_needed: int, tokens_available: int):
        super().__init__(message)
        self.tokens_needed, self.tokens_available = tokens_needed, tokens_available
        self.overflow = tokens_needed - tokens_available


def check_fits(tokens_needed: int, tokens_available: int, *, name: str = "This document") -> None:
    """Raise ContextOverflowError saying by how many tokens `name` overflows when tokens_needed > tokens_available."""
    if tokens_needed > tokens_available:
        raise ContextOverflowError(
            f"{name} needs {tokens_needed:,} tokens but only {max(tokens_available, 0):,} are left in the context "
            f"window: it overflows by {tokens_needed - max(tokens_available, 0):,} tokens",
            tokens_needed, tokens_available)


def estimate_tokens(text: str) -> int:
    """Token estimate without a tokenizer: ASCII chars / 3.5 + other chars / 1.5 (rough: see the constants)."""
    ascii_chars = len(text.encode("ascii", errors="ignore"))
    other = len(text) - ascii_chars
    return math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN + other / OTHER_CHARS_PER_TOKEN)


def split_for_counting(text: str, slice_chars: int = TOKEN_SLICE_CHARS) -> list[str]:
    """Cut text into ~slice_chars pieces at 'x\\nY' boundaries (a lone newline between non-space characters),
    where byte-level BPE pre-tokenizers split anyway, so summing per-piece counts equals counting the whole."""
    pieces, start = [], 0
    while len(text) - start > slice_chars:
        cut = _boundary(text, start + slice_chars, start)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _boundary(text: str, target: int, floor: int) -> int:
    cut = text.rfind("\n", floor + 1, target)
    while cut > floor + 1:
        if not text[cut - 1].isspace() and cut + 1 < len(text) and not text[cut + 1].isspace():
            return cut + 1
        cut = text.rfind("\n", floor + 1, cut)
    cut = text.rfind(" ", floor + 1, target)
    while cut > floor + 1:
        if not text[cut - 1].isspace() and cut + 1 < len(text) and not text[cut + 1].isspace():
            return cut
        cut = text.rfind(" ", floor + 1, cut)
    return target


def iter_token_count(text: str, count_tokens: Callable[[str], int], slice_chars: int = TOKEN_SLICE_CHARS):
    """Count tokens slice by slice; yields ReadProgress(chars_done, total_chars, 'tokens'); returns the total."""
    total = 0
    done = 0
    for piece in split_for_counting(text, slice_chars):
        total += count_tokens(piece)
        done += len(piece)
        yield ReadProgress(done, len(text), "tokens")
    return total


def iter_read_document(source: str | os.PathLike | bytes, *, original_name: str | None = None,
                       max_bytes: int = DEFAULT_MAX_BYTES, count_tokens: Callable[[str], int] | None = None,
                       limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[ReadProgress | Document]:
    """Generator form of read_document: yields ReadProgress events, then the Document as the last item."""
    name = original_name or (os.path.basename(source) if not isinstance(source, bytes) else "upload")
    data = _load(source, name, max_bytes)
    try:
        kind, language = _kind(name, data)
        reader, section_label, encoding = _reader(kind, language, data, limits)
        text, sections = yield from reader
        check_text(text, limits)
        if not text.strip():
            raise Unreadable("has no text to read")
    except Unreadable as exc:
        raise DocumentError(f"{name} {exc}") from None
    if count_tokens is None:
        num_tokens = estimate_tokens(text)
        yield ReadProgress(len(text), len(text), "tokens")
    else:
        num_tokens = yield from iter_token_count(text, count_tokens)
    yield Document(name, kind, text, len(data), num_tokens, count_tokens is None, sections, section_label,
                   language, encoding)


def read_document(source: str | os.PathLike | bytes, *, original_name: str | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES, count_tokens: Callable[[str], int] | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  limits: ReadLimits = DEFAULT_LIMITS) -> Document:
    """Read an upload (a path, or bytes plus original_name) into a Document; raise DocumentError if unusable.

    count_tokens: the engine tokenizer's counter; None → estimate_tokens and tokens_estimated=True.
    progress(done, total, stage): called per page/sheet/slide and per ~1M-char slice while counting tokens.
    """
    for item in iter_read_document(source, original_name=original_name, max_bytes=max_bytes,
                                   count_tokens=count_tokens, limits=limits):
        if isinstance(item, Document):
            return item
        if progress is not None:
            progress(*item)
    raise AssertionError("iter_read_document ended without a Document")


def _load(source, name: str, max_bytes: int) -> bytes:
    size = len(source) if isinstance(source, bytes) else os.stat(source).st_size
    if size > max_bytes:
        raise DocumentError(f"{name} is {_size(size)} ({size:,} bytes), over the {_size(max_bytes)} upload limit")
    if size == 0:
        raise DocumentError(f"{name} is empty (0 bytes)")
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read(max_bytes + 1)


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} bytes"


def _kind(name: str, data: bytes) -> tuple[str, str]:
    """(kind, code language) from content sniffing first, then the extension."""
    sniffed = formats.sniff_kind(data)
    if sniffed in _UNSUPPORTED_CONTENT:
        raise Unreadable(_UNSUPPORTED_CONTENT[sniffed])
    if sniffed:
        return sniffed, ""
    base = os.path.basename(name).lower()
    ext = os.path.splitext(base)[1]
    if ext in BINARY_KINDS:
        return BINARY_KINDS[ext], ""
    if base in CODE_FILENAMES or ext in CODE_LANGUAGES:
        return "code", CODE_FILENAMES.get(base) or CODE_LANGUAGES[ext]
    for kind, extensions in (("markdown", MARKDOWN_EXTENSIONS), ("html", HTML_EXTENSIONS),
                             ("csv", CSV_EXTENSIONS), ("json", {".json"}), ("text", TEXT_EXTENSIONS)):
        if ext in extensions:
            return kind, ext.lstrip(".") if kind == "csv" else ""
    try:
        text_formats.decode_text(data)
    except Unreadable:
        raise Unreadable(f"has an unsupported type ({ext or 'no extension'}): upload {SUPPORTED}") from None
    return "text", ""


def _reader(kind: str, language: str, data: bytes, limits: ReadLimits):
    """(generator returning (text, sections), section label, encoding) for one kind."""
    binary = {"pdf": (formats.read_pdf, "page"), "docx": (formats.read_docx, "heading"),
              "xlsx": (xlsx.read_xlsx, "sheet"), "pptx": (formats.read_pptx, "slide")}
    if kind in binary:
        if kind != "pdf":
            check_zip(data, limits)
        read, label = binary[kind]
        return read(data, limits), label, ""
    text, encoding = text_formats.decode_text(data)
    if kind == "html":
        text = text_formats.html_to_markdown(text, limits)
    elif kind == "csv":
        text = text_formats.csv_to_markdown(text, CSV_EXTENSIONS.get(f".{language}"), limits)
    elif kind == "json":
        text = text_formats.json_to_markdown(text, limits)
    elif kind == "code":
        text = text_formats.code_fence(text, language)
    if kind in ("html", "markdown"):
        return _done(text, _count_headings(text)), "heading", encoding
    return _done(text, 1), "file", encoding


def _done(text: str, sections: int):
    yield ReadProgress(1, 1, "parse")
    return text, sections


def _count_headings(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.startswith("#") and line.lstrip("#").startswith(" "))
