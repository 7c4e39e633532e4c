"""Built-in studio tools: the ast calculator (arithmetic only, limits) and the document search (passages with
page / sheet markers), behind the ToolBox runner that never raises on the model's calls."""
import pytest

from studio.tools.calculator import CalculatorError, calculate
from studio.tools.documents import search
from studio.tools.toolbox import ToolBox


@pytest.mark.parametrize("expression, value", [("1 + 2 * 3", 7), ("(3 + 4.5) * 2 ** 3 / sqrt(16)", 15.0),
                                               ("-7 // 2", -4), ("2 ** 0.5", 2 ** 0.5), ("round(pi, 2)", 3.14),
                                               ("10 % 4", 2), ("abs(-3)", 3)])
def test_calculator_values(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression, words", [
    ("__import__('os').system('ls')", "not allowed"), ("open('x')", "not allowed"), ("a + 1", "not allowed"),
    ("(1).__class__", "not allowed"), ("9 ** 9 ** 9", "exponent"), ("1 / 0", "cannot evaluate"),
    ("1 +", "not an expression"), ("x" * 600, "longer than"), ("True + 1", "not allowed"),
    ("[1, 2]", "not allowed"), ("lambda: 1", "not allowed"), ("10 ** 5000 * 10 ** 5000", "digits")])
def test_calculator_refuses(expression, words):
    with pytest.raises(CalculatorError, match=words):
        calculate(expression)


DOCS = [("report.pdf", "--- Page 1 ---\nIntro text about cats.\n\n--- Page 2 ---\nRevenue grew 12% in 2024."),
        ("sales.xlsx", "## Sheet: Q3\n\n| region | revenue |\n|---|---|\n| north | 5 |")]


def test_document_search_names_the_page_and_sheet():
    hits = search(DOCS, "revenue 2024", max_results=5)
    assert [(h["name"], h["marker"]) for h in hits] == [("report.pdf", "Page 2"), ("sales.xlsx", "sheet Q3")]
    assert "12%" in hits[0]["text"] and search(DOCS, "   ") == []


def test_toolbox_runs_calls_and_reports_problems_as_text():
    box = ToolBox(["calculator", "documents"])
    assert [s["name"] for s in box.specs] == ["calculator", "search_documents"]
    assert box.run("calculator", '{"expression": "6 * 7"}', []) == "42"
    assert box.run("calculator", '{"expression": "os"}', []).startswith("error: ")
    assert "[report.pdf · Page 2]" in box.run("search_documents", '{"query": "revenue"}', DOCS)
    assert box.run("search_documents", '{"query": "x"}', []) == "no documents are attached to this chat"
    assert box.run("nope", "{}", []).startswith("error: there is no tool")
    assert box.run("calculator", "{bad", []).startswith("error: ")
    assert not ToolBox([]) and ToolBox(["calculator"]).run("search_documents", "{}", DOCS).startswith("error")
    with pytest.raises(ValueError, match="unknown tool"):
        ToolBox(["shell"])
