"""Document bombs built in the test: each is refused quickly with an error naming the file and the limit, memory
stays bounded, a sparse XLSX is read by its real cells, and reading in a child process has a memory cap and dies
when its caller is cancelled."""
import asyncio
import io
import json
import os
import resource
import time
import zipfile

import docx
import openpyxl
import pytest

from studio.documents.documents import DocumentError, read_document
from studio.documents.isolated import read_isolated
from studio.documents.limits import DEFAULT_LIMITS, ReadLimits

QUICK_S = 10.0
MEMORY_MB = 400  # growth of this process's peak RSS allowed while reading one bomb


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def refused(data: bytes, name: str, limits=DEFAULT_LIMITS) -> str:
    """Read a bomb: it must fail with DocumentError, quickly and without a big memory peak; returns the message."""
    peak, started = _peak_mb(), time.perf_counter()
    with pytest.raises(DocumentError) as info:
        read_document(data, original_name=name, limits=limits)
    assert time.perf_counter() - started < QUICK_S
    assert _peak_mb() - peak < MEMORY_MB
    message = str(info.value)
    assert message.startswith(name), message
    return message


def sparse_xlsx() -> bytes:
    book = openpyxl.Workbook()
    book.active["A1"], book.active["XFD1048576"] = "first", "last"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def docx_bytes(paragraphs: int = 1) -> bytes:
    document = docx.Document()
    for number in range(paragraphs):
        document.add_paragraph(f"paragraph {number}")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def inflated_docx(xml_mb: int) -> bytes:
    """A real DOCX whose word/document.xml unpacks to xml_mb MiB (a few hundred KB compressed)."""
    source, out = zipfile.ZipFile(io.BytesIO(docx_bytes())), io.BytesIO()
    para = b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                target.writestr(item, source.read(item))
                continue
            head, tail = source.read(item).split(b"<w:body>")
            info = zipfile.ZipInfo("word/document.xml")
            info.compress_type = zipfile.ZIP_DEFLATED
            with target.open(info, "w", force_zip64=True) as member:
                member.write(head + b"<w:body>")
                chunk = para * ((1 << 20) // len(para))
                for _ in range(xml_mb * (1 << 20) // len(chunk)):
                    member.write(chunk)
                member.write(tail)
    return out.getvalue()


def test_sparse_xlsx_is_read_by_its_real_cells():
    data = sparse_xlsx()
    assert len(data) < 10_000
    peak, started = _peak_mb(), time.perf_counter()
    doc = read_document(data, original_name="sparse.xlsx")
    assert time.perf_counter() - started < QUICK_S and _peak_mb() - peak < MEMORY_MB
    assert "first" in doc.text and "last" in doc.text and len(doc.text) < 500, doc.text


def test_xlsx_over_the_cell_budget():
    book = openpyxl.Workbook()
    for row in range(1, 101):
        book.active.append([f"r{row}c{col}" for col in range(1, 31)])
    out = io.BytesIO()
    book.save(out)
    message = refused(out.getvalue(), "cells.xlsx", ReadLimits(max_cells=1_000))
    assert "1,000 cells" in message


def test_docx_whose_xml_inflates_is_refused_before_parsing():
    data = inflated_docx(xml_mb=DEFAULT_LIMITS.max_unzipped_bytes // (1 << 20) + 8)
    assert len(data) < 2 * (1 << 20)
    message = refused(data, "bomb.docx")
    assert "unpack" in message and f"{DEFAULT_LIMITS.max_unzipped_bytes // (1 << 20)} MiB" in message


def test_docx_over_the_paragraph_budget():
    message = refused(docx_bytes(paragraphs=300), "long.docx", ReadLimits(max_paragraphs=100))
    assert "100 paragraphs" in message


@pytest.mark.parametrize("name, text", [
    ("nested.html", "<div>" * 50_000 + "deep" + "</div>" * 50_000),
    ("nested.json", "[" * 100_000 + "]" * 100_000),
    ("nested-ok-parse.json", "[" * 600 + "1" + "]" * 600),
])
def test_deep_nesting_is_refused(name, text):
    message = refused(text.encode(), name)
    assert f"nested deeper than {DEFAULT_LIMITS.max_depth} levels" in message


def test_csv_over_the_row_budget():
    rows = "\n".join(f"{i},x" for i in range(500)).encode()
    assert "200 rows" in refused(rows, "rows.csv", ReadLimits(max_rows=200))


def test_isolated_read_matches_and_reports_errors(tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(docx_bytes(paragraphs=3))
    isolated = asyncio.run(read_isolated(str(path), original_name="report.docx"))
    assert isolated == read_document(str(path), original_name="report.docx")
    with pytest.raises(DocumentError, match=r"^deep\.json .*nested deeper"):
        asyncio.run(read_isolated(("[" * 100_000).encode(), original_name="deep.json"))


UNLIMITED = ReadLimits(max_unzipped_bytes=1 << 40, max_cells=10**12, max_rows=10**12, max_paragraphs=10**12,
                       max_text_chars=10**15)


def test_isolated_read_has_a_memory_cap_and_dies_when_cancelled():
    bomb, seen = inflated_docx(xml_mb=400), {}

    async def main():
        task = asyncio.ensure_future(read_isolated(bomb, original_name="bomb.docx", limits=UNLIMITED,
                                                   memory_mb=8192, on_start=lambda pid: seen.setdefault("pid", pid)))
        while "pid" not in seen:
            await asyncio.sleep(0.02)
        limits = open(f"/proc/{seen['pid']}/limits").read()
        seen["cap"] = next(line for line in limits.splitlines() if line.startswith("Max address space")).split()[3]
        await asyncio.sleep(0.3)  # the child is parsing 400 MiB of XML
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = time.perf_counter()
        while os.path.exists(f"/proc/{seen['pid']}") and time.perf_counter() - cancelled_at < 5:
            await asyncio.sleep(0.05)
        return time.perf_counter() - cancelled_at

    assert asyncio.run(main()) < 5, "the reading process outlived its cancelled caller"
    assert int(seen["cap"]) == 8192 << 20


def test_isolated_read_out_of_memory_is_a_clear_error():
    with pytest.raises(DocumentError, match=r"^bomb\.docx .*memory.*768 MiB"):
        asyncio.run(read_isolated(inflated_docx(xml_mb=300), original_name="bomb.docx", limits=UNLIMITED,
                                  memory_mb=768))


def test_json_under_the_depth_limit_still_reads():
    doc = read_document(json.dumps({"a": [[[1, 2]]]}).encode(), original_name="ok.json")
    assert '"a"' in doc.text
