"""The built-in tools a host switched on: their specs for the prompt and a runner for the model's calls."""
import json

from studio.tools import calculator, documents

AVAILABLE = {"calculator": calculator.SPEC, "documents": documents.SPEC}


class ToolBox:
    """`names`: a subset of AVAILABLE ("calculator", "documents")."""

    def __init__(self, names=()):
        unknown = [n for n in names if n not in AVAILABLE]
        if unknown:
            raise ValueError(f"unknown tool(s) {', '.join(unknown)}; available: {', '.join(AVAILABLE)}")
        self.names = list(dict.fromkeys(names))

    def __bool__(self) -> bool:
        return bool(self.names)

    @property
    def specs(self) -> list[dict]:
        """The tools for the chat template (bare function dicts)."""
        return [AVAILABLE[n] for n in self.names]

    def run(self, name: str, arguments: str, docs: list[tuple[str, str]]) -> str:
        """Run one call (arguments as JSON text); problems come back as text for the model, never raise."""
        try:
            args = json.loads(arguments)
        except json.JSONDecodeError:
            return "error: the arguments are not valid JSON"
        if name == calculator.SPEC["name"] and "calculator" in self.names:
            return calculator.run(args)
        if name == documents.SPEC["name"] and "documents" in self.names:
            return documents.run(args, docs)
        return f"error: there is no tool named {name!r}"


def result_content(results: list[dict]) -> str:
    """A stored tool message: JSON [{"name", "arguments", "result"}] (studio.store.prompt.tool_message reads it)."""
    return json.dumps(results, ensure_ascii=False)
