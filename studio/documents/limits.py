"""Reading budgets of an upload: what a small file may make the readers do (unpacked bytes, cells, rows, paragraphs,
pages, nesting depth, extracted characters). A reader that would pass one stops early with `LimitExceeded`, whose
message continues "<file name> ..." and names the limit.

    check_zip(data, DEFAULT_LIMITS)                       # before any Office reader opens the archive
    counter = Budget(limits.max_cells, "cells"); counter.spend(n)

The budgets bound the work a crafted file can cause; the memory cap of the reading process (studio.documents.isolated)
backs them up for what they do not foresee.
"""
import io
import zipfile
from dataclasses import dataclass

MiB = 1 << 20


class Unreadable(ValueError):
    """A reader could not turn the bytes into text; the message continues a sentence that starts with the file name."""


class LimitExceeded(Unreadable):
    """An upload needs more than a reading budget allows."""


@dataclass(frozen=True)
class ReadLimits:
    """Budgets of one read. Defaults fit a 1M-token context with room to spare (4M tokens ~ 16M characters)."""

    max_unzipped_bytes: int = 256 * MiB  # all members of a DOCX/XLSX/PPTX, as declared (zipfile enforces them)
    max_cells: int = 4_000_000  # XLSX cells present in the sheets' XML (empty ones included), all sheets
    max_rows: int = 1_000_000  # XLSX rows with a cell, CSV/TSV rows
    max_paragraphs: int = 500_000  # DOCX paragraphs and table rows
    max_pages: int = 10_000  # PDF pages, PPTX slides
    max_depth: int = 500  # nesting of HTML elements and JSON arrays/objects (Python's recursion limit is 1,000)
    max_text_chars: int = 64_000_000  # extracted text


DEFAULT_LIMITS = ReadLimits()


class Budget:
    """A count that raises LimitExceeded once it passes `limit`."""

    def __init__(self, limit: int, unit: str, where: str = ""):
        self.limit, self.unit, self.where, self.used = limit, unit, where, 0

    def spend(self, amount: int = 1) -> None:
        self.used += amount
        if self.used > self.limit:
            where = f" {self.where}" if self.where else ""
            raise LimitExceeded(f"is over the reading limit of {self.limit:,} {self.unit}{where}: it was not read "
                                "further (split the file, or remove what is not needed)")


def check_zip(data: bytes, limits: ReadLimits) -> None:
    """Refuse an Office archive whose members unpack to more than max_unzipped_bytes, before reading any of them."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a readable archive: the format's reader reports it
    total = sum(member.file_size for member in members)
    if total > limits.max_unzipped_bytes:
        raise LimitExceeded(f"is over the reading limit: its {len(members)} ZIP members unpack to "
                            f"{total / MiB:,.0f} MiB (limit {limits.max_unzipped_bytes // MiB} MiB); a file this "
                            "compressed is refused")


def check_text(text: str, limits: ReadLimits) -> str:
    """The extracted text, unless it is longer than max_text_chars."""
    if len(text) > limits.max_text_chars:
        raise LimitExceeded(f"is over the reading limit of {limits.max_text_chars:,} characters of text "
                            f"({len(text):,}): split the file")
    return text


def too_deep(limits: ReadLimits) -> LimitExceeded:
    """The error for nesting deeper than max_depth."""
    return LimitExceeded(f"is nested deeper than {limits.max_depth} levels (the reading limit): flatten it, or "
                         "upload it as plain text")


def json_depth(value, limit: int) -> int:
    """Nesting depth of parsed JSON (iterative), counting no further than limit + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
