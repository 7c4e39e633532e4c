"""Readers for text-based uploads: plain text, Markdown, CSV, JSON, HTML and source code → Markdown-ish text.

Every reader takes raw bytes and returns text; a bad input raises `Unreadable` whose message is a sentence tail
("is not valid JSON ...") that `studio.documents` prefixes with the file name.
"""
import codecs
import csv
import io
import json
import re

from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, Tag

from studio.documents.limits import DEFAULT_LIMITS, Budget, ReadLimits, Unreadable, json_depth, too_deep

MAX_BAD_UTF8_PER_BYTE = 0.001
MAX_CONTROL_RATIO = 0.02  # share of C0 control characters (besides \t \n \r \f) above which text is binary junk
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode uploaded bytes as text; return (text, encoding). Raise Unreadable for binary content.

    Order: a BOM wins; NUL bytes mean binary; then strict UTF-8; UTF-8 with U+FFFD replacements when at most
    MAX_BAD_UTF8_PER_BYTE (0.1%) of the bytes are invalid (damaged or truncated UTF-8); GB18030; Windows-1252.
    A decoding with more than MAX_CONTROL_RATIO control characters is rejected as binary.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _checked(data.decode(encoding, errors="replace"), encoding), encoding
    if b"\x00" in data:
        raise Unreadable("looks like a binary file, not text (it contains NUL bytes)")
    try:
        return _checked(data.decode("utf-8"), "utf-8"), "utf-8"
    except UnicodeDecodeError:
        replaced = data.decode("utf-8", errors="replace")
    bad = replaced.count("\ufffd")
    if bad <= len(data) * MAX_BAD_UTF8_PER_BYTE:
        return _checked(replaced, "utf-8"), "utf-8 (damaged)"
    for encoding in ("gb18030", "cp1252"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return _checked(text, encoding), encoding
    raise Unreadable(f"looks like a binary file, not text ({bad:,} bytes are not valid UTF-8)")


def _checked(text: str, encoding: str) -> str:
    controls = len(_CONTROL.findall(text))
    if text and controls / len(text) > MAX_CONTROL_RATIO:
        raise Unreadable(f"looks like a binary file, not text ({controls:,} control characters as {encoding})")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def md_table(rows: list[list[str]]) -> str:
    """Render rows (first row = header) as a Markdown table; pipes are escaped, newlines become <br>."""
    width = max((len(row) for row in rows), default=0)
    if width == 0:
        return ""
    cells = [[_md_cell(c) for c in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _md_cell(value) -> str:
    text = "" if value is None else str(value)
    return text.strip().replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def csv_to_markdown(text: str, delimiter: str | None = None, limits: ReadLimits = DEFAULT_LIMITS) -> str:
    """CSV/TSV text → one Markdown table (first row as header); the delimiter is sniffed when not given."""
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    rows, budget = [], Budget(limits.max_rows, "rows")
    for row in csv.reader(io.StringIO(text), delimiter=delimiter):
        if any(c.strip() for c in row):
            budget.spend()
            rows.append(row)
    return md_table(rows)


def json_to_markdown(text: str, limits: ReadLimits = DEFAULT_LIMITS) -> str:
    """Validate JSON (nested no deeper than limits.max_depth) and pretty-print it inside a ```json fence."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Unreadable(f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise too_deep(limits) from None
    if json_depth(value, limits.max_depth) > limits.max_depth:
        raise too_deep(limits)
    return code_fence(json.dumps(value, indent=2, ensure_ascii=False), "json")


def code_fence(text: str, language: str) -> str:
    """Wrap text in a fenced block longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


_SKIP_TAGS = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button", "select"}
_BLOCK_TAGS = {"p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "ul", "ol", "dl",
               "dt", "dd", "blockquote", "figure", "figcaption", "form", "address", "hr", "body", "html"}
_HEADINGS = {f"h{level}": level for level in range(1, 7)}


def html_to_markdown(html: str, limits: ReadLimits = DEFAULT_LIMITS) -> str:
    """HTML → text with '#' headings, '- ' list items, fenced <pre> blocks and Markdown tables; elements nested
    deeper than limits.max_depth are refused."""
    if _tag_depth(html, limits.max_depth) > limits.max_depth:  # before the (slow on deep trees) parser runs
        raise too_deep(limits)
    soup = BeautifulSoup(html, "html.parser")
    if _html_depth(soup, limits.max_depth) > limits.max_depth:
        raise too_deep(limits)
    parts: list[str] = []
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if title:
        parts.append(f"# {title}\n\n")
    _walk_html(soup, parts)
    return _tidy("".join(parts))


_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^>]*?(/?)>")
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
         "wbr"}


def _tag_depth(html: str, limit: int) -> int:
    """Open-tag nesting as the markup states it (unclosed tags nest, as html.parser builds them), up to limit + 1."""
    depth = deepest = 0
    for match in _TAG.finditer(html):
        if match.group(1):
            depth = max(0, depth - 1)
        elif not match.group(3) and match.group(2).lower() not in _VOID:
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
    return deepest


def _html_depth(soup, limit: int) -> int:
    """Element nesting depth (iterative), counting no further than limit + 1."""
    deepest, stack = 0, [(soup, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in node.contents if isinstance(child, Tag))
    return deepest


def _walk_html(node, out: list[str]) -> None:
    for child in node.children:
        if isinstance(child, (Comment, Doctype)):
            continue
        if isinstance(child, NavigableString):
            out.append(re.sub(r"\s+", " ", str(child)))
        elif child.name in _SKIP_TAGS:
            continue
        elif child.name in _HEADINGS:
            out.append(f"\n\n{'#' * _HEADINGS[child.name]} {child.get_text(' ', strip=True)}\n\n")
        elif child.name == "table":
            out.append("\n\n" + _html_table(child) + "\n\n")
        elif child.name == "pre":
            out.append("\n\n" + code_fence(child.get_text(), "") + "\n\n")
        elif child.name == "br":
            out.append("\n")
        elif child.name == "li":
            out.append("\n- ")
            _walk_html(child, out)
        elif child.name in _BLOCK_TAGS:
            out.append("\n\n")
            _walk_html(child, out)
            out.append("\n\n")
        else:
            _walk_html(child, out)


def _html_table(table) -> str:
    rows = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is table:
            rows.append([cell.get_text(" ", strip=True) for cell in tr.find_all(["th", "td"], recursive=False)])
    return md_table([row for row in rows if row])


def _tidy(text: str) -> str:
    lines, in_fence = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            line = line.strip()
        lines.append(line.rstrip() if in_fence else line.strip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
