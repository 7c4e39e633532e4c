"""Readers for binary uploads (PDF, DOCX, XLSX, PPTX) and content sniffing by magic bytes.

Each reader is a generator: it yields progress tuples (done, total, stage) and returns (text, num_sections).
Bad input raises `Unreadable` with a sentence tail that `studio.documents` prefixes with the file name; a budget of
`limits` (pages, slides, paragraphs) passed raises `LimitExceeded`. XLSX lives in studio.documents.xlsx.
"""
import io
import re
import textwrap
import zipfile

import docx
from docx.table import Table
from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pypdf import PdfReader
from pypdf.errors import DependencyError

from studio.documents.limits import DEFAULT_LIMITS, Budget, LimitExceeded, ReadLimits
from studio.documents.text_formats import Unreadable, md_table

_ZIP_MEMBERS = {"word/document.xml": "docx", "xl/workbook.xml": "xlsx", "ppt/presentation.xml": "pptx"}
_MAGIC = {b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "legacy-office", b"\x89PNG": "image", b"\xff\xd8\xff": "image",
          b"GIF8": "image", b"\x1f\x8b": "archive", b"7z\xbc\xaf": "archive", b"Rar!": "archive"}


def sniff_kind(data: bytes) -> str | None:
    """Kind from magic bytes: 'pdf', 'docx', 'xlsx', 'pptx', 'archive', 'legacy-office', 'image', or None (text?)."""
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        return next((kind for member, kind in _ZIP_MEMBERS.items() if member in names), "archive")
    return next((kind for magic, kind in _MAGIC.items() if data.startswith(magic)), None)


def read_pdf(data: bytes, limits: ReadLimits = DEFAULT_LIMITS):
    """PDF → text with a '--- Page N ---' marker before each page. Yields (page, pages, 'pages')."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("is password-protected: remove the password and upload it again")
        Budget(limits.max_pages, "pages").spend(len(reader.pages))
        pages = list(reader.pages)
    except (Unreadable, MemoryError):
        raise
    except DependencyError:
        raise Unreadable("is encrypted with a cipher this server cannot decrypt: save it without encryption") from None
    except Exception as exc:
        raise Unreadable(f"is not a readable PDF (damaged or truncated: {exc})") from None
    if not pages:
        raise Unreadable("is not a readable PDF (damaged or truncated: no pages found)")
    parts, num_chars = [], 0
    for number, page in enumerate(pages, 1):
        text = _page_text(page, number)
        num_chars += len(text)
        parts.append(f"--- Page {number} ---\n{text}")
        yield number, len(pages), "pages"
    if num_chars == 0:
        raise Unreadable(f"has no extractable text in its {len(pages)} page(s): it is probably scanned images "
                         "or blank pages, and OCR is not supported")
    return "\n\n".join(parts), len(pages)


def _page_text(page, number: int) -> str:
    """Layout-mode text (a table row stays on one line, columns aligned), plain mode if layout fails."""
    try:
        try:
            text = page.extract_text(extraction_mode="layout") or ""
        except Exception:
            text = page.extract_text() or ""
    except Exception as exc:
        raise Unreadable(f"is not a readable PDF (page {number} is damaged: {exc})") from None
    text = textwrap.dedent("\n".join(line.rstrip() for line in text.split("\n")))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def read_docx(data: bytes, limits: ReadLimits = DEFAULT_LIMITS):
    """DOCX → text with '#' headings, '- ' list items and Markdown tables, in document order."""
    budget = Budget(limits.max_paragraphs, "paragraphs and table rows")
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = []
        for item in document.iter_inner_content():
            budget.spend(len(item.rows) if isinstance(item, Table) else 1)
            blocks.append(_docx_block(item))
    except (LimitExceeded, MemoryError):
        raise
    except Exception as exc:
        raise Unreadable(f"is not a readable Word document (damaged, or not a .docx file: {exc})") from None
    yield 1, 1, "parse"
    blocks = [block for block in blocks if block]
    return "\n\n".join(blocks), sum(block.startswith("#") for block in blocks)


def _docx_block(item) -> str:
    if isinstance(item, Table):
        return md_table([[cell.text for cell in row.cells] for row in item.rows])
    text = item.text.strip()
    style = item.style.name if item.style is not None else ""
    if not text:
        return ""
    if style == "Title":
        return f"# {text}"
    if style.startswith("Heading"):
        level = style.removeprefix("Heading").strip()
        return f"{'#' * min(int(level) if level.isdigit() else 1, 6)} {text}"
    return f"- {text}" if style.startswith("List") else text


def read_pptx(data: bytes, limits: ReadLimits = DEFAULT_LIMITS):
    """PPTX → one '## Slide N' section per slide: title as '###', text frames, tables as Markdown, notes."""
    try:
        slides = list(Presentation(io.BytesIO(data)).slides)
        Budget(limits.max_pages, "slides").spend(len(slides))
        sections = []
        for number, slide in enumerate(slides, 1):
            sections.append(_slide_text(number, slide))
            yield number, len(slides), "slides"
    except (LimitExceeded, MemoryError):
        raise
    except Exception as exc:
        raise Unreadable(f"is not a readable PowerPoint file (damaged, or not a .pptx file: {exc})") from None
    return "\n\n".join(sections), len(slides)


def _slide_text(number: int, slide) -> str:
    lines = [f"## Slide {number}"]
    title = slide.shapes.title
    for shape in _flat_shapes(slide.shapes):
        if shape.has_table:
            lines.append(md_table([[cell.text for cell in row.cells] for row in shape.table.rows]))
        elif shape.has_text_frame and shape.text_frame.text.strip():
            text = shape.text_frame.text.strip()
            lines.append(f"### {text}" if title is not None and shape.shape_id == title.shape_id else text)
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
        if notes:
            lines.append(f"Notes: {notes}")
    return "\n\n".join(lines)


def _flat_shapes(shapes):
    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _flat_shapes(shape.shapes)
        else:
            yield shape
