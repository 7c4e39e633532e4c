"""Documents: real generated files (PDF, DOCX, XLSX, PPTX, HTML, CSV, JSON, code) → text, and each error message."""
import os
import re
import shutil

import pytest
from tokenizers.pre_tokenizers import ByteLevel

import fixtures_docs as fx
from studio.documents.documents import (ContextOverflowError, DocumentError, check_fits, estimate_tokens, read_document,
                              split_for_counting)

_PRE = ByteLevel(add_prefix_space=False, use_regex=True)


def count_pretokens(text: str) -> int:
    """A real boundary-sensitive counter: the byte-level BPE pre-tokenizer's piece count."""
    return len(_PRE.pre_tokenize_str(text))


@pytest.fixture(scope="module")
def pdf_path(tmp_path_factory):
    return fx.make_pdf(tmp_path_factory.mktemp("pdf") / "report.pdf")


def read_error(path, **kwargs) -> str:
    with pytest.raises(DocumentError) as info:
        read_document(path, **kwargs)
    return str(info.value)


def test_pdf_pages_table_rows_and_progress(pdf_path):
    events = []
    doc = read_document(pdf_path, progress=lambda *event: events.append(event))
    assert (doc.kind, doc.sections, doc.section_label, doc.name) == ("pdf", 2, "page", "report.pdf")
    page1, page2 = doc.text.split("--- Page 2 ---")
    assert page1.startswith("--- Page 1 ---\n") and "Quarterly Report" in page1
    assert re.search(r"North\s+120\s+4800", page1) and re.search(r"Region\s+Units\s+Revenue", page1)
    assert "outlook for next year" in page2
    assert events[:2] == [(1, 2, "pages"), (2, 2, "pages")] and events[-1][2] == "tokens"
    assert doc.tokens_estimated and doc.num_tokens == estimate_tokens(doc.text)


def test_pdf_is_sniffed_from_content_whatever_the_name(pdf_path):
    data = open(pdf_path, "rb").read()
    doc = read_document(data, original_name="notes.txt")
    assert doc.kind == "pdf" and doc.name == "notes.txt" and "--- Page 2 ---" in doc.text


def test_encrypted_pdf(pdf_path, tmp_path):
    path = fx.make_encrypted_pdf(tmp_path / "secret.pdf", pdf_path)
    assert read_error(path) == "secret.pdf is password-protected: remove the password and upload it again"


def test_corrupt_pdf(pdf_path, tmp_path):
    path = fx.make_corrupt_pdf(tmp_path / "broken.pdf", pdf_path)
    assert read_error(path).startswith("broken.pdf is not a readable PDF (damaged or truncated: ")


def test_pdf_without_text(tmp_path):
    path = fx.make_blank_pdf(tmp_path / "scan.pdf")
    assert read_error(path) == ("scan.pdf has no extractable text in its 1 page(s): it is probably scanned images "
                                "or blank pages, and OCR is not supported")


def test_docx_headings_list_and_table(tmp_path):
    doc = read_document(fx.make_docx(tmp_path / "plan.docx"))
    assert doc.kind == "docx" and doc.sections == 2
    assert doc.text.startswith("# Project Plan\n\nThe plan has three phases.\n\n- Hire the team\n\n")
    assert "| Region | Units | Revenue |\n|---|---|---|\n| North | 120 | 4800 |\n| South | 75 | 3000 |" in doc.text
    assert doc.text.endswith("## Risks\n\nBudget | timeline risk.")


@pytest.mark.parametrize("name,expected", [
    ("plan.docx", "plan.docx is not a readable Word document (damaged, or not a .docx file: "),
    ("book.xlsx", "book.xlsx is not a readable Excel workbook (damaged, or not an .xlsx file: "),
    ("deck.pptx", "deck.pptx is not a readable PowerPoint file (damaged, or not a .pptx file: "),
], ids=["docx", "xlsx", "pptx"])
def test_corrupt_office_files(tmp_path, name, expected):
    good = {"plan.docx": fx.make_docx, "book.xlsx": fx.make_xlsx, "deck.pptx": fx.make_pptx}[name](tmp_path / name)
    truncated = fx.write(tmp_path / f"cut-{name}", open(good, "rb").read()[:1500])
    assert read_error(truncated, original_name=name).startswith(expected)
    plain_text = fx.write(tmp_path / f"text-{name}", "this is not an office file")
    assert read_error(plain_text, original_name=name).startswith(expected)


def test_xlsx_two_sheets_as_tables(tmp_path):
    events = []
    doc = read_document(fx.make_xlsx(tmp_path / "book.xlsx"), progress=lambda *e: events.append(e))
    assert doc.kind == "xlsx" and doc.sections == 2 and (1, 2, "sheets") in events
    assert doc.text.startswith("## Sheet: Sales\n\n| Region | Units | Price | Date |\n|---|---|---|---|\n")
    assert "| North | 120 | 2.5 | 2026-01-31 |\n| South | 75 | 4 | 2026-02-28 |" in doc.text
    assert doc.text.endswith("## Sheet: Notes\n\n| Checked by audit |\n|---|")


def test_pptx_slides_table_and_notes(tmp_path):
    doc = read_document(fx.make_pptx(tmp_path / "deck.pptx"))
    assert doc.kind == "pptx" and doc.sections == 2
    assert doc.text.startswith("## Slide 1\n\n### Launch Review\n\nStatus as of March\n\n## Slide 2\n\n### Numbers")
    assert "| Metric | Value |\n|---|---|\n| Users | 1500 |" in doc.text and "Notes: Mention the churn." in doc.text


def test_html_headings_lists_tables_code(tmp_path):
    doc = read_document(fx.write(tmp_path / "page.html", fx.HTML))
    assert doc.kind == "html" and "hidden" not in doc.text and "color:red" not in doc.text
    assert "# Install\n\nRun the installer then reboot.\n\n- fast\n- safe\n\n## Prices" in doc.text
    assert "| Plan | Cost |\n|---|---|\n| Basic | $5 |\n| Pro \\| Max | $9 |" in doc.text
    assert "```\ndef f():\n    return 1\n```" in doc.text


@pytest.mark.parametrize("name,content,expected", [
    ("data.csv", "name,qty\nbolt,10\n\nnut,\"2,5\"\n", "| name | qty |\n|---|---|\n| bolt | 10 |\n| nut | 2,5 |"),
    ("data.csv", "a;b\n1;2\n", "| a | b |\n|---|---|\n| 1 | 2 |"),
    ("data.tsv", "a\tb,c\n1\t2\n", "| a | b,c |\n|---|---|\n| 1 | 2 |"),
    ("cfg.json", '{"b": [1, 2], "a": "é"}', '```json\n{\n  "b": [\n    1,\n    2\n  ],\n  "a": "é"\n}\n```'),
    ("main.py", "def f():\n    return 1\n", "```python\ndef f():\n    return 1\n```"),
    ("doc.md", "# Title\n\nText with ``` inside\n", "# Title\n\nText with ``` inside\n"),
    ("fence.py", "s = '```'\n", "````python\ns = '```'\n````"),
    ("Dockerfile", "FROM python:3.11\n", "```dockerfile\nFROM python:3.11\n```"),
    ("notes", "plain words, no extension", "plain words, no extension"),
], ids=["csv", "csv-semicolon", "tsv", "json", "python", "markdown", "fence-in-code", "dockerfile", "no-ext"])
def test_text_formats(tmp_path, name, content, expected):
    doc = read_document(fx.write(tmp_path / name, content))
    assert doc.text == expected and doc.encoding == "utf-8"


def test_legacy_encodings_and_bom(tmp_path):
    latin = read_document(fx.write(tmp_path / "fr.txt", "Le café coûte 2 €.\n".encode("cp1252")))
    assert (latin.text, latin.encoding) == ("Le café coûte 2 €.\n", "cp1252")
    chinese = read_document(fx.write(tmp_path / "zh.txt", "文档内容，长上下文。".encode("gb18030")))
    assert (chinese.text, chinese.encoding) == ("文档内容，长上下文。", "gb18030")
    bom = read_document(fx.write(tmp_path / "bom.txt", "\ufeffhello\r\nworld".encode("utf-8")))
    assert (bom.text, bom.encoding) == ("hello\nworld", "utf-8-sig")
    cut = read_document(fx.write(tmp_path / "cut.txt", ("长上下文。" * 400).encode()[:-1]))  # last char truncated
    assert (cut.text, cut.encoding) == ("长上下文。" * 399 + "长上下文\ufffd", "utf-8 (damaged)")


def test_invalid_json(tmp_path):
    path = fx.write(tmp_path / "bad.json", '{"a": 1,\n "b": }')
    assert read_error(path) == "bad.json is not valid JSON (line 2, column 7: Expecting value)"


def test_binary_junk_with_text_extension(tmp_path):
    with_nul = fx.write(tmp_path / "junk.txt", fx.binary_junk())
    assert read_error(with_nul) == "junk.txt looks like a binary file, not text (it contains NUL bytes)"
    without_nul = fx.write(tmp_path / "junk.md", fx.binary_junk(with_nul=False))
    assert re.fullmatch(r"junk\.md looks like a binary file, not text \(.* (not valid UTF-8|control characters .*)\)",
                        read_error(without_nul))


@pytest.mark.parametrize("name,data,expected", [
    ("blob.bin", fx.binary_junk(),
     "blob.bin has an unsupported type (.bin): upload PDF, DOCX, XLSX, PPTX, HTML, Markdown, text, CSV, JSON or "
     "source code"),
    ("photo.txt", b"\x89PNG\r\n\x1a\n" + bytes(64),
     "photo.txt is an image; images are not supported (there is no OCR)"),
    ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64),
     "old.doc is a legacy Office file (.doc/.xls/.ppt): save it as .docx, .xlsx or .pptx and upload it again"),
    ("empty.txt", b"", "empty.txt is empty (0 bytes)"),
    ("blank.md", b"  \n\n \t\n", "blank.md has no text to read"),
], ids=["unsupported", "image", "legacy-office", "empty", "whitespace"])
def test_unusable_uploads(tmp_path, name, data, expected):
    assert read_error(fx.write(tmp_path / name, data)) == expected


def test_archive_is_rejected(tmp_path):
    archive = shutil.make_archive(str(tmp_path / "bundle"), "zip", root_dir=os.path.dirname(fx.__file__),
                                  base_dir="fixtures_docs.py")
    assert read_error(archive) == ("bundle.zip is an archive (ZIP, gzip, 7z or RAR): upload the files inside it "
                                   "instead")


def test_size_cap_checked_before_reading(tmp_path):
    path = fx.write(tmp_path / "big.txt", "x" * 3000)
    assert read_error(path, max_bytes=2048) == "big.txt is 2.9 KiB (3,000 bytes), over the 2.0 KiB upload limit"
    assert read_document(path, max_bytes=3000).num_chars == 3000


def test_failed_read_leaves_no_files(tmp_path, pdf_path):
    path = fx.make_encrypted_pdf(tmp_path / "locked.pdf", pdf_path)
    before = sorted(os.listdir(tmp_path))
    read_error(path)
    assert sorted(os.listdir(tmp_path)) == before


def test_injected_counter_streams_progress_and_is_exact(tmp_path):
    paragraph = "Long-context models read whole documents.  Tables | stay; 数字 123\n\n"
    path = fx.write(tmp_path / "long.md", paragraph * 40000)
    events = []
    doc = read_document(path, count_tokens=count_pretokens, progress=lambda *e: events.append(e))
    token_events = [e for e in events if e[2] == "tokens"]
    assert len(token_events) >= 2 and token_events[-1][:2] == (doc.num_chars, doc.num_chars)
    assert doc.num_tokens == count_pretokens(doc.text) and not doc.tokens_estimated


@pytest.mark.parametrize("text", ["a\nb " * 500, "word  word\n\n\nnext\n" * 300, "x" * 2000,
                                  "中文 句子。\n" * 400], ids=["newlines", "space-runs", "no-boundary", "cjk"])
def test_split_for_counting_keeps_text_and_counts(text):
    pieces = split_for_counting(text, slice_chars=97)
    assert "".join(pieces) == text and len(pieces) > 1
    if "\n" in text:
        assert sum(map(count_pretokens, pieces)) == count_pretokens(text)


def test_check_fits_says_by_how_much():
    check_fits(900, 900)
    with pytest.raises(ContextOverflowError) as info:
        check_fits(1_204_000, 950_000, name="book.pdf")
    assert str(info.value) == ("book.pdf needs 1,204,000 tokens but only 950,000 are left in the context window: "
                               "it overflows by 254,000 tokens")
    assert info.value.overflow == 254_000 and isinstance(info.value, DocumentError)
