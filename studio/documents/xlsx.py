"""XLSX reader by real cells: each sheet's XML is parsed cell by cell (openpyxl's read-only WorkSheetParser), never
by its dimension box, so a sheet with cells at A1 and XFD1048576 costs two cells, not 17 billion.

    text, sheets = yield from read_xlsx(data, limits)     # yields (sheet, sheets, 'sheets')

Output: one '## Sheet: name' section per worksheet, a Markdown table of its non-empty rows (first row as header),
columns from the first to the last used one, or only the used ones when that box is mostly empty (a sparse sheet).
"""
import datetime
import io

import openpyxl
from openpyxl.worksheet._reader import WorkSheetParser  # the parser openpyxl's read-only sheets use (3.1.x)

from studio.documents.limits import DEFAULT_LIMITS, Budget, LimitExceeded, ReadLimits
from studio.documents.text_formats import Unreadable, md_table

SMALL_BOX = 10_000  # a sheet's box of at most this many cells keeps its empty columns (as Excel shows them)


def read_xlsx(data: bytes, limits: ReadLimits = DEFAULT_LIMITS):
    """XLSX → one '## Sheet: name' section per worksheet, each a Markdown table (first row as header)."""
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except MemoryError:
        raise
    except Exception as exc:
        raise Unreadable(f"is not a readable Excel workbook (damaged, or not an .xlsx file: {exc})") from None
    cells, rows = Budget(limits.max_cells, "cells"), Budget(limits.max_rows, "rows")
    try:
        sheets, parts = workbook.worksheets, []
        for number, sheet in enumerate(sheets, 1):
            table = _table(_sheet_cells(workbook, sheet, cells, rows))
            parts.append(f"## Sheet: {sheet.title}\n\n{md_table(table) or '(empty sheet)'}")
            yield number, len(sheets), "sheets"
    except (LimitExceeded, MemoryError):
        raise
    except Exception as exc:
        raise Unreadable(f"is not a readable Excel workbook (damaged sheet: {exc})") from None
    finally:
        workbook.close()
    return "\n\n".join(parts), len(parts)


def _sheet_cells(workbook, sheet, cells: Budget, rows: Budget) -> dict[int, dict[int, str]]:
    """{row: {column: text}} of the cells present in the sheet's XML with a non-blank value."""
    found: dict[int, dict[int, str]] = {}
    with sheet._get_source() as source:
        parser = WorkSheetParser(source, sheet._shared_strings, data_only=True, epoch=workbook.epoch,
                                 date_formats=workbook._date_formats, timedelta_formats=workbook._timedelta_formats)
        for row_number, row in parser.parse():
            cells.spend(len(row))
            values = {cell["column"]: text for cell in row if (text := _cell_text(cell["value"])).strip()}
            if values:
                rows.spend()
                found.setdefault(row_number, {}).update(values)
    return found


def _table(found: dict[int, dict[int, str]]) -> list[list[str]]:
    if not found:
        return []
    used = sorted({column for values in found.values() for column in values})
    box, real = range(used[0], used[-1] + 1), sum(len(values) for values in found.values())
    columns = box if len(box) * len(found) <= max(4 * real, SMALL_BOX) else used
    return [[found[row].get(column, "") for column in columns] for row in sorted(found)]


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time(0):
        return value.date().isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)
