"""Generators of real document fixtures (PDF, DOCX, XLSX, PPTX, ...) for tests/test_documents.py and the store tests."""
import datetime
import random

import docx
import openpyxl
from pptx import Presentation
from pptx.util import Inches
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table

TABLE_ROWS = [["Region", "Units", "Revenue"], ["North", "120", "4800"], ["South", "75", "3000"]]


def make_pdf(path) -> str:
    """Two pages: a heading, a paragraph and a 3x3 table on page 1, one paragraph on page 2."""
    styles = getSampleStyleSheet()
    story = [Paragraph("Quarterly Report", styles["Title"]),
             Paragraph("Sales grew in every region this quarter.", styles["Normal"]),
             Table(TABLE_ROWS), PageBreak(),
             Paragraph("Page two holds the outlook for next year.", styles["Normal"])]
    SimpleDocTemplate(str(path), pagesize=A4).build(story)
    return str(path)


def make_encrypted_pdf(path, source) -> str:
    """`source` PDF re-saved with the user password 'secret'."""
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password="secret", owner_password="owner")
    with open(path, "wb") as file:
        writer.write(file)
    return str(path)


def make_corrupt_pdf(path, source) -> str:
    """The PDF header followed by garbled bytes (the rest of `source` with every byte flipped), cut in half."""
    data = open(source, "rb").read()
    garbled = data[:9] + bytes(b ^ 0x5A for b in data[9:len(data) // 2])
    open(path, "wb").write(garbled)
    return str(path)


def make_blank_pdf(path) -> str:
    """One empty page: what a scanned PDF without a text layer looks like to a text extractor."""
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    with open(path, "wb") as file:
        writer.write(file)
    return str(path)


def make_docx(path) -> str:
    """A heading, a paragraph, a bullet, a 3x3 table, then a second heading."""
    document = docx.Document()
    document.add_heading("Project Plan", level=1)
    document.add_paragraph("The plan has three phases.")
    document.add_paragraph("Hire the team", style="List Bullet")
    table = document.add_table(rows=3, cols=3)
    for i, row in enumerate(TABLE_ROWS):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
    document.add_heading("Risks", level=2)
    document.add_paragraph("Budget | timeline risk.")
    document.save(path)
    return str(path)


def make_xlsx(path) -> str:
    """Two sheets: 'Sales' (header + 2 rows, a float, a date) and 'Notes' (one cell, offset to C3)."""
    workbook = openpyxl.Workbook()
    sales = workbook.active
    sales.title = "Sales"
    for row in (["Region", "Units", "Price", "Date"], ["North", 120, 2.5, datetime.date(2026, 1, 31)],
                ["South", 75, 4.0, datetime.date(2026, 2, 28)]):
        sales.append(row)
    notes = workbook.create_sheet("Notes")
    notes["C3"] = "Checked by audit"
    workbook.save(path)
    return str(path)


def make_pptx(path) -> str:
    """Two slides: a title slide, and a title-only slide with a 2x2 table and speaker notes."""
    presentation = Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[0])
    first.shapes.title.text = "Launch Review"
    first.placeholders[1].text = "Status as of March"
    second = presentation.slides.add_slide(presentation.slide_layouts[5])
    second.shapes.title.text = "Numbers"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for i, row in enumerate([["Metric", "Value"], ["Users", "1500"]]):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
    second.notes_slide.notes_text_frame.text = "Mention the churn."
    presentation.save(path)
    return str(path)


HTML = """<!doctype html><html><head><title>Docs Page</title><style>p{color:red}</style>
<script>var hidden = 1;</script></head><body><h1>Install</h1><p>Run the <b>installer</b>
then reboot.</p><ul><li>fast</li><li>safe</li></ul><h2>Prices</h2>
<table><tr><th>Plan</th><th>Cost</th></tr><tr><td>Basic</td><td>$5</td></tr><tr><td>Pro | Max</td><td>$9</td></tr>
</table><pre>def f():
    return 1</pre></body></html>"""


def write(path, data: bytes | str) -> str:
    """Write bytes or UTF-8 text to path; return the path as str."""
    with open(path, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
    return str(path)


def binary_junk(seed: int = 42, size: int = 4096, with_nul: bool = True) -> bytes:
    """Seeded random bytes; with_nul=False replaces NUL bytes to defeat the simplest binary check."""
    data = random.Random(seed).randbytes(size)
    return data if with_nul else data.replace(b"\x00", b"\x01")
