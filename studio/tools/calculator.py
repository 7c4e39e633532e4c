"""A safe calculator tool: arithmetic parsed with `ast` and evaluated node by node (no eval, no names but a few
math functions and constants), with limits on exponent and result size."""
import ast
import math
import operator

SPEC = {"name": "calculator", "description": "Evaluate an arithmetic expression, e.g. (3 + 4.5) * 2 ** 3 / sqrt(16)",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}
MAX_CHARS, MAX_EXPONENT, MAX_DIGITS = 500, 10_000, 4_000
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "log": math.log, "log10": math.log10, "exp": math.exp, "sin": math.sin,
              "cos": math.cos, "tan": math.tan, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class CalculatorError(ValueError):
    """The expression is not arithmetic we evaluate."""


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression; CalculatorError says what is not allowed or went wrong."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("give an arithmetic expression as a string")
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an expression: {exc.msg}") from None
    try:
        return _value(tree.body)
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise CalculatorError(f"cannot evaluate: {exc}") from None


def run(arguments: dict) -> str:
    """The tool: {"expression": ...} -> the value as text (or the error, for the model to read)."""
    try:
        value = calculate(arguments.get("expression"))
    except CalculatorError as exc:
        return f"error: {exc}"
    return repr(value) if isinstance(value, float) else str(value)


def _value(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is larger than {MAX_EXPONENT}")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, int) and result.bit_length() > MAX_DIGITS * 3.33:
            raise CalculatorError(f"the result has more than {MAX_DIGITS} digits")
        return result
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords and len(node.args) in (1, 2):
        return _FUNCTIONS[node.func.id](*[_value(a) for a in node.args])
    raise CalculatorError(f"{ast.unparse(node)!r} is not allowed (numbers, + - * / // % **, "
                          f"{', '.join(sorted(_FUNCTIONS))}, pi, e)")
