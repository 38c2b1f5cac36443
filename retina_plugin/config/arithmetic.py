"""
The arithmetic a config may compute: Detectron2's own Base-RetinaNet.yaml writes its anchor sizes
as `!!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, ...]]"]`,
which `yaml.unsafe_load` hands to Python's `eval`. `evaluate_arithmetic` computes such an
expression over Python's `ast` instead: numbers, lists and tuples, + - * / **, unary - and +,
and list comprehensions over literal lists; no names but the comprehension variables, no calls,
no attributes, so no expression can reach anything but numbers.
"""
import ast
import operator
from typing import Dict

__all__ = ["evaluate_arithmetic"]

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
# Bounds that keep a hostile expression from taking the memory or time of the machine; a config's
# numbers (sizes, ratios, learning rates) are many orders of magnitude inside them.
MAX_INT_BITS = 1024
MAX_ELEMENTS = 100_000
ALLOWED = "only numbers, lists, + - * / ** and list comprehensions over literal lists are allowed"


def evaluate_arithmetic(expression: str):
    """The value of `expression` (numbers, lists, tuples); ValueError saying what is not allowed."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not a Python expression ({e.msg})") from None
    try:
        return _Arithmetic().value(tree.body, {})
    except (ArithmeticError, RecursionError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


class _Arithmetic:
    def __init__(self):
        self.elements = 0

    def value(self, node: ast.AST, names: Dict[str, object]):
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                raise ValueError(f"the constant {node.value!r} is not a number; {ALLOWED}")
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.value(item, names) for item in node.elts]
            self._count(len(items))
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"the name {node.id!r} is not allowed; {ALLOWED}")
            return names[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self._number(node.operand, names))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._number(node.left, names), self._number(node.right, names)
            if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int):
                if right > 0 and max(left.bit_length(), 1) * right > MAX_INT_BITS:
                    raise ValueError(f"{left} ** {right} is too large")
            return self._bounded(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.ListComp):
            return self._comprehension(node.elt, node.generators, names)
        raise ValueError(f"{type(node).__name__} is not allowed; {ALLOWED}")

    def _number(self, node: ast.AST, names):
        value = self.value(node, names)
        if type(value) not in (int, float):
            raise ValueError(f"arithmetic on {type(value).__name__} is not allowed; {ALLOWED}")
        return value

    def _comprehension(self, element: ast.AST, generators, names) -> list:
        first, rest = generators[0], generators[1:]
        if first.ifs or first.is_async or not isinstance(first.target, ast.Name):
            raise ValueError(f"a comprehension may only be `for NAME in [...]`; {ALLOWED}")
        if not isinstance(first.iter, (ast.List, ast.Tuple)):
            raise ValueError(f"a comprehension may only run over a literal list; {ALLOWED}")
        out = []
        for item in self.value(first.iter, names):
            inner = {**names, first.target.id: item}
            out.extend(self._comprehension(element, rest, inner) if rest else [self.value(element, inner)])
            self._count(1)
        return out

    def _count(self, n: int) -> None:
        self.elements += n
        if self.elements > MAX_ELEMENTS:
            raise ValueError(f"the expression builds more than {MAX_ELEMENTS} values")

    @staticmethod
    def _bounded(value):
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise ValueError(f"a number of more than {MAX_INT_BITS} bits")
        return value
