"""The document-search tool: passages of the session's attached documents that contain the query's words, each
with its document name and the page / sheet / slide / heading marker it falls under."""
import re

SPEC = {"name": "search_documents", "description": "Search the documents attached to this chat; returns matching "
        "passages with their document name and page or sheet",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                        "max_results": {"type": "integer", "minimum": 1,
                                                                        "maximum": 10}},
                       "required": ["query"]}}
_MARKER = re.compile(r"^(--- Page \d+ ---|## Sheet: .+|## Slide \d+.*|#{1,3} .+)$", re.MULTILINE)
_WORD = re.compile(r"\w+", re.UNICODE)
PASSAGE_CHARS = 400


def search(documents: list[tuple[str, str]], query: str, max_results: int = 3) -> list[dict]:
    """Best passages for query over (name, text) documents: dicts name, marker, text, score (words matched)."""
    words = {w.lower() for w in _WORD.findall(query or "")}
    if not words:
        return []
    hits = []
    for name, text in documents:
        for marker, passage in _passages(text):
            found = {w.lower() for w in _WORD.findall(passage)} & words
            if found:
                hits.append({"name": name, "marker": marker, "text": passage, "score": len(found)})
    hits.sort(key=lambda h: -h["score"])
    return hits[:max_results]


def run(arguments: dict, documents: list[tuple[str, str]]) -> str:
    """The tool: {"query", "max_results"?} -> the passages as text (what the model reads)."""
    limit = arguments.get("max_results") or 3
    hits = search(documents, str(arguments.get("query", "")), max(1, min(int(limit), 10)))
    if not documents:
        return "no documents are attached to this chat"
    if not hits:
        return f"no passage matches {arguments.get('query')!r}"
    return "\n\n".join(f"[{h['name']}{' · ' + h['marker'] if h['marker'] else ''}]\n{h['text']}" for h in hits)


def _passages(text: str):
    """(marker, passage) pieces: paragraphs cut to PASSAGE_CHARS, each under the latest section marker."""
    marker = ""
    for block in re.split(r"\n\s*\n", text):
        found = _MARKER.findall(block)
        if found:
            marker = found[-1].strip("-# ").replace("Sheet: ", "sheet ").strip()
            block = _MARKER.sub("", block).strip()
        for start in range(0, len(block), PASSAGE_CHARS):
            piece = block[start:start + PASSAGE_CHARS].strip()
            if piece:
                yield marker, piece
