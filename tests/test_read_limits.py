"""The reading budgets at their edges, fast (the mutation run uses this file; the bombs live in
test_document_limits.py): a real file exactly at a limit is read, one unit over is refused with the whole message, and
the helpers count what they say they count."""
import io
import zipfile

import docx
import pytest

from studio.documents.documents import DocumentError, read_document
from studio.documents.limits import (DEFAULT_LIMITS, MiB, Budget, LimitExceeded, ReadLimits, Unreadable, check_text,
                                     check_zip, json_depth, too_deep)

TAIL = "it was not read further (split the file, or remove what is not needed)"


def refused(data: bytes, name: str, limits: ReadLimits) -> str:
    with pytest.raises(DocumentError) as info:
        read_document(data, original_name=name, limits=limits)
    return str(info.value)


def docx_bytes(filler_bytes: int = 0) -> bytes:
    document = docx.Document()
    document.add_paragraph("hello " + "x" * filler_bytes)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def unzipped(data: bytes) -> tuple[int, int]:
    members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    return len(members), sum(member.file_size for member in members)


def test_the_defaults_are_the_documented_budgets():
    assert (DEFAULT_LIMITS.max_unzipped_bytes, DEFAULT_LIMITS.max_cells, DEFAULT_LIMITS.max_rows,
            DEFAULT_LIMITS.max_paragraphs, DEFAULT_LIMITS.max_pages, DEFAULT_LIMITS.max_depth,
            DEFAULT_LIMITS.max_text_chars) == (256 << 20, 4_000_000, 1_000_000, 500_000, 10_000, 500, 64_000_000)
    assert MiB == 1_048_576 and issubclass(LimitExceeded, Unreadable) and issubclass(Unreadable, ValueError)


def test_budget_counts_up_to_its_limit_and_names_it():
    budget = Budget(3, "rows")
    budget.spend()
    budget.spend(2)
    assert budget.used == 3
    with pytest.raises(LimitExceeded) as info:
        budget.spend()
    assert str(info.value) == f"is over the reading limit of 3 rows: {TAIL}"
    with pytest.raises(LimitExceeded) as info:
        Budget(1_500, "cells", "in sheet Data").spend(1_501)
    assert str(info.value) == f"is over the reading limit of 1,500 cells in sheet Data: {TAIL}"


def test_csv_rows_at_the_limit_read_and_one_more_is_refused():
    rows = "\n".join(f"{i},x" for i in range(3))
    assert read_document(rows.encode(), original_name="rows.csv", limits=ReadLimits(max_rows=3)).text.count("| x |") == 3
    message = refused((rows + "\n3,x").encode(), "rows.csv", ReadLimits(max_rows=3))
    assert message == f"rows.csv is over the reading limit of 3 rows: {TAIL}"


def test_text_at_the_limit_reads_and_one_character_more_is_refused():
    limits = ReadLimits(max_text_chars=1_000)
    assert read_document(b"x" * 1_000, original_name="a.txt", limits=limits).text == "x" * 1_000
    message = refused(b"x" * 1_001, "a.txt", limits)
    assert message == "a.txt is over the reading limit of 1,000 characters of text (1,001): split the file"
    assert check_text("abc", ReadLimits(max_text_chars=3)) == "abc"


def test_office_archive_at_the_unzipped_limit_reads_and_one_byte_less_refuses_it():
    data = docx_bytes()
    count, total = unzipped(data)
    assert "hello" in read_document(data, original_name="a.docx", limits=ReadLimits(max_unzipped_bytes=total)).text
    message = refused(data, "a.docx", ReadLimits(max_unzipped_bytes=total - 1))
    assert message.startswith(f"a.docx is over the reading limit: its {count} ZIP members unpack to ")


def test_unzipped_message_gives_mebibytes():
    base = unzipped(docx_bytes())[1]
    data = docx_bytes(filler_bytes=3 * MiB + 200_000 - base)  # compresses to a few KB
    count, total = unzipped(data)
    assert 3 * MiB < total < 3.5 * MiB and len(data) < 100_000
    with pytest.raises(LimitExceeded) as info:
        check_zip(data, ReadLimits(max_unzipped_bytes=2 * MiB))
    assert str(info.value) == (f"is over the reading limit: its {count} ZIP members unpack to 3 MiB (limit 2 MiB); "
                               "a file this compressed is refused")
    check_zip(data, ReadLimits(max_unzipped_bytes=4 * MiB))


def test_a_file_that_is_not_an_archive_is_left_to_its_reader():
    check_zip(b"not a zip at all", ReadLimits(max_unzipped_bytes=0))
    message = refused(b"not a zip at all", "broken.docx", ReadLimits(max_unzipped_bytes=0))
    assert "reading limit" not in message


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_json_at_the_depth_limit_reads_and_one_level_more_is_refused(shape):
    def nested(depth: int) -> str:
        return ('{"a": ' * depth + "1" + "}" * depth) if shape == "dict" else ("[" * depth + "1" + "]" * depth)

    limits = ReadLimits(max_depth=5)
    assert "```json" in read_document(nested(5).encode(), original_name="ok.json", limits=limits).text
    message = refused(nested(6).encode(), "deep.json", limits)
    assert message == ("deep.json is nested deeper than 5 levels (the reading limit): flatten it, or upload it as "
                       "plain text")


def test_json_depth_counts_the_deepest_branch_and_stops_past_the_limit():
    assert json_depth(7, 10) == 0 and json_depth("text", 10) == 0
    assert json_depth([], 10) == 1 and json_depth({}, 10) == 1
    assert json_depth([[1], {"b": [[2]]}, 3], 10) == 4  # the deep branch comes after a shallow one
    assert json_depth({"a": 1, "b": {"c": [{"d": 1}]}}, 10) == 4
    assert json_depth([[[[[[[]]]]]]], 2) == 3  # counts no further than limit + 1
    assert json_depth([[[[]]]], 4) == 4


def test_too_deep_names_the_limit():
    error = too_deep(ReadLimits(max_depth=7))
    assert isinstance(error, LimitExceeded)
    assert str(error) == "is nested deeper than 7 levels (the reading limit): flatten it, or upload it as plain text"
