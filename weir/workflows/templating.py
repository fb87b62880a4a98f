"""Templates and expressions of workflow files, rendered in a bounded Jinja2 sandbox.

Templates come only from files of the applied revision; data from outside (payloads, headers,
step outputs) reaches them as variables and is never compiled, so nothing is rendered twice.

- A string that is exactly one ``{{ expression }}`` (whitespace around it allowed) gives the
  expression's native value; any other string with ``{{`` or ``{%`` renders to text; other
  strings are returned as they are, without touching Jinja.
- ``if``, ``filter`` and similar keys are bare expressions (``evaluate``).
- ``template_refs`` / ``expression_refs`` list the names a template reads, for ``weir check``.

Rendering is bounded by ``TemplateLimits``: the text a template outputs, the size of every value
it builds (``*``, ``**``, ``+``, ``~``, ``%``, string methods and the amplifying filters), and the
time it runs (checked on every loop step, call and operator). A bound that is hit raises
``TemplateError``. Values passed in through the scope are not measured, only what is built from them.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import BuiltinMethodType
from typing import Any

from jinja2 import (
    StrictUndefined,
    Template,
    Undefined,
    filters as jinja_filters,
    nodes,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import TemplateError as JinjaTemplateError, TemplateSyntaxError
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from weir.errors import TemplateError, WeirError
from weir.schemas.common import parse_duration

MIB = 1024 * 1024
_LOOP_GUARD = "weir_loop_guard"
_PRINTF_RE = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_CODE_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_NAME_RE = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|(?<![\w.])([A-Za-z_]\w*)""", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Ref:
    """A name a template reads from its scope: ``steps.analyze.output['severity']`` is
    ``Ref("steps", ("analyze", "output", "severity"), line, column)``.

    ``path`` is the constant attribute/subscript chain after the root and stops at the first
    dynamic subscript. ``line`` and ``column`` are 1-based inside the template text; column is 0
    when it could not be found.
    """

    root: str
    path: tuple[str | int, ...]
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """What one rendering may use before it fails with ``TemplateError``."""

    max_output: int = MIB
    """Characters a string template may output, and the size of any value it builds. Default 1 MiB."""
    max_int_bits: int = 4096
    """Bits of an integer built by ``*`` or ``**``. Default 4096."""
    max_seconds: float = 1.0
    """Wall time of one rendering, checked at loop steps, calls and operators. Default 1 s."""


class _Refused(Exception):
    """A bound was hit; becomes a TemplateError naming the template."""


class _Budget:
    __slots__ = ("deadline", "seconds", "ticks")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.ticks = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("weir_template_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.ticks += 1
        if not budget.ticks & 0xFF and time.monotonic() > budget.deadline:
            raise _Refused(f"rendering took longer than {budget.seconds:g} s")


@pass_context
def _loop_guard(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _tick()
        yield item


def _human(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit:,}"


def _size(value: Any, limit: int) -> int:
    """Roughly how many characters ``value`` renders to; stops counting once over ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple):
            total += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        else:
            total += 1
    return total


def _printf_fields(fmt: str, limit: int) -> int:
    """How many ``%`` fields ``fmt`` has; refuse ``*`` widths and widths over ``limit``."""
    count = 0
    for match in _PRINTF_RE.finditer(fmt):
        count += 1
        for number in match.groups():
            if number == "*" or (number and (len(number) > 9 or int(number) > limit)):
                raise _Refused(f"a '%' format width or precision of {number} is over the limit of {_human(limit)}")
    return count


def _method_size(obj: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """The size of ``obj.name(*args)`` for the str/bytes methods that can grow a value."""
    size = len(obj)
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        return max(size, args[0])
    if name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        return size + obj.count("\t" if isinstance(obj, str) else b"\t") * tab if isinstance(tab, int) else size
    if name == "replace" and len(args) >= 2 and all(isinstance(a, type(obj)) for a in args[:2]):
        old, new = args[0], args[1]
        count = obj.count(old) if old else size + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        return size + count * (len(new) - len(old))
    if name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        return size * max(longest, 1)
    return size


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or an ISO 8601 string, got {type(value).__name__}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _tojson(value: Any, indent: int | None = None) -> str:
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, default=_json_default)


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


_FILTERS: dict[str, Callable[..., Any]] = {
    "tojson": _tojson,
    "fromjson": json.loads,
    "b64encode": lambda value: base64.b64encode(_to_bytes(value)).decode("ascii"),
    "b64decode": lambda value: base64.b64decode(_to_bytes(value), validate=True).decode("utf-8"),
    "isoformat": lambda value: _as_datetime(value).isoformat(),
    "strftime": lambda value, fmt: _as_datetime(value).strftime(fmt),
    "duration": lambda value: parse_duration(value).total_seconds(),
    "todatetime": _as_datetime,
}


class _CodeGenerator(CodeGenerator):
    """Sends ``~`` through the environment so that string concatenation is measured too."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with size, integer and time bounds and weir's filters."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, limits: TemplateLimits) -> None:
        super().__init__(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
        self.limits = limits
        for name in ("lipsum", "cycler", "joiner"):
            del self.globals[name]
        self.filters.update(_FILTERS)
        self.filters.update(self._bounded_filters())
        self.filters[_LOOP_GUARD] = _loop_guard

    def check_size(self, size: int, what: str) -> None:
        if size > self.limits.max_output:
            raise _Refused(
                f"{what} would build a value of size {size:,} (the limit is {_human(self.limits.max_output)})"
            )

    def _check_bits(self, bits: int, what: str) -> None:
        if bits > self.limits.max_int_bits:
            raise _Refused(
                f"{what} would build an integer of about {bits:,} bits (the limit is {self.limits.max_int_bits:,} bits)"
            )

    def _check_printf(self, fmt: str, args: Any) -> None:
        fields = _printf_fields(fmt, self.limits.max_output)
        repeat = fields if isinstance(args, Mapping) else 1
        self.check_size(len(fmt) + repeat * _size(args, self.limits.max_output), "'%'")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        limit = self.limits.max_output
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                self._check_bits(left.bit_length() + right.bit_length(), "'*'")
            elif isinstance(right, int) and right > 1 and isinstance(left, str | bytes | list | tuple):
                self.check_size(_size(left, limit) * right, "'*'")
            elif isinstance(left, int) and left > 1 and isinstance(right, str | bytes | list | tuple):
                self.check_size(_size(right, limit) * left, "'*'")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                self._check_bits(math.ceil(right * math.log2(abs(left))), "'**'")
        elif operator == "+":
            if isinstance(left, str | bytes | list | tuple) and isinstance(right, str | bytes | list | tuple):
                self.check_size(len(left) + len(right), "'+'")
        elif operator == "%" and isinstance(left, str):
            self._check_printf(left, right)
        return super().call_binop(context, operator, left, right)

    def concat_bounded(self, parts: tuple[Any, ...]) -> str:
        _tick()
        texts = [str(part) for part in parts]
        self.check_size(sum(map(len, texts)), "'~'")
        return "".join(texts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Undefined):
            str(obj)  # a StrictUndefined raises its own "'x' is undefined" here, before any dunder lookup
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Undefined):
            str(obj)
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        owner = getattr(obj, "__self__", None)
        if isinstance(obj, BuiltinMethodType) and isinstance(owner, str | bytes):
            if obj.__name__ == "join" and len(args) == 1:
                items = list(args[0])
                self.check_size(len(owner) * max(len(items) - 1, 0) + _size(items, self.limits.max_output), "join()")
                args = (items,)
            else:
                self.check_size(_method_size(owner, obj.__name__, args, kwargs), f"{obj.__name__}()")
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is not None:
            fmt: str = value.__self__
            fields = [spec or "" for _, field, spec, _ in string.Formatter().parse(fmt) if field is not None]
            for spec in fields:
                if "{" in spec or any(len(n) > 9 or int(n) > self.limits.max_output for n in re.findall(r"\d+", spec)):
                    raise _Refused(f"the format spec {spec!r} is not allowed (nested, or over the size limit)")
            bound = self.check_size

            def bounded(*args: Any, **kwargs: Any) -> str:
                largest = max((_size(v, self.limits.max_output) for v in (*args, *kwargs.values())), default=0)
                bound(len(fmt) + len(fields) * largest, "format()")
                return wrapper(*args, **kwargs)

            return bounded
        return None

    def _bounded_filters(self) -> dict[str, Callable[..., Any]]:
        check, limit = self.check_size, self.limits.max_output

        def center(value: Any, width: int = 80) -> str:
            check(max(len(str(value)), width if isinstance(width, int) else 0), "center")
            return jinja_filters.do_center(value, width)

        def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
            text = str(s)
            pad = width if isinstance(width, int) else len(str(width))
            check(len(text) + (text.count("\n") + 1) * pad, "indent")
            return jinja_filters.do_indent(text, width, first, blank)

        def format_(value: str, *args: Any, **kwargs: Any) -> str:
            self._check_printf(str(value), kwargs or args)
            return jinja_filters.do_format(value, *args, **kwargs)

        @pass_eval_context
        def join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
            items = list(value)
            measured = _size(items, limit) if attribute is None else 0
            check(len(str(d)) * max(len(items) - 1, 0) + measured, "join")
            return str(jinja_filters.sync_do_join(eval_ctx, items, d, attribute))

        @pass_eval_context
        def replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
            args = (str(old), str(new)) if count is None else (str(old), str(new), count)
            check(_method_size(str(s), "replace", args, {}), "replace")
            return jinja_filters.do_replace(eval_ctx, s, old, new, count)

        @pass_environment
        def wordwrap(environment: Any, s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
            wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
            lines = len(s) // max(width, 1) + s.count(" ") + s.count("\n") + 1
            check(len(s) + lines * len(wrapstring), "wordwrap")
            return jinja_filters.do_wordwrap(environment, s, width, *args, **kwargs)

        def batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
            if fill_with is not None:
                check(linecount, "batch")
            batches: Iterator[list[Any]] = jinja_filters.do_batch(value, linecount, fill_with)
            return batches

        def slice_(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
            check(slices, "slice")
            columns: Iterator[list[Any]] = jinja_filters.sync_do_slice(value, slices, fill_with)
            return columns

        return {
            "center": center,
            "indent": indent,
            "format": format_,
            "join": join,
            "replace": replace,
            "wordwrap": wordwrap,
            "batch": batch,
            "slice": slice_,
        }


def _constant_key(node: nodes.Node) -> str | int | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str | int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, nodes.Neg) and isinstance(key := _constant_key(node.node), int):
        return -key
    return None


_UNSUPPORTED: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
}


class _RefCollector:
    """Walks a parsed template in source order and records the names it reads from the scope.

    Every name node is counted per (line, name), bound or not, so that the k-th one can be matched
    to the k-th such name in the source text to find its column.
    """

    def __init__(self, ignored: frozenset[str], filters: Mapping[str, Any], tests: Mapping[str, Any]) -> None:
        self.ignored = ignored
        self.filters = filters
        self.tests = tests
        self.found: list[tuple[str, tuple[str | int, ...], int, int]] = []
        self.counts: dict[tuple[int, str], int] = {}

    def refs(self, source: str, *, whole: bool) -> tuple[Ref, ...]:
        columns = _columns(source, whole=whole) if self.found else {}
        refs = []
        for root, path, line, index in self.found:
            places = columns.get((line, root), [])
            column = places[index] if len(places) == self.counts[line, root] else 0  # 0 when ambiguous
            refs.append(Ref(root, path, line, column))
        return tuple(refs)

    def body(self, body: Sequence[nodes.Node], bound: set[str]) -> None:
        for node in body:
            self.stmt(node, bound)

    def stmt(self, node: nodes.Node, bound: set[str]) -> None:
        """Visit a statement; ``{% set %}`` adds to ``bound``, scopes (for, macro, with) work on a copy."""
        if isinstance(node, nodes.For):
            inner = self.bind(node.target, bound | {"loop"})
            self.expr(node.iter, bound)
            if node.test is not None:
                self.expr(node.test, inner)
            self.body(node.body, inner)
            self.body(node.else_, set(bound))
        elif isinstance(node, nodes.If):
            self.expr(node.test, bound)
            self.body(node.body, bound)
            self.body(node.elif_, bound)
            self.body(node.else_, bound)
        elif isinstance(node, nodes.Assign | nodes.AssignBlock):
            if isinstance(node.target, nodes.NSRef):
                self.name(node.target.name, (node.target.attr,), node.target.lineno, bound)
            names = self.bind(node.target, set())
            if isinstance(node, nodes.Assign):
                self.expr(node.node, bound)
            else:
                self.body(node.body, set(bound))
                if node.filter is not None:
                    self.expr(node.filter, bound)
            bound |= names
        elif isinstance(node, nodes.Macro | nodes.CallBlock):
            if isinstance(node, nodes.Macro):
                self.count(node.name, node.lineno)
                bound.add(node.name)
            inner = bound | {"varargs", "kwargs", "caller"}
            first_default = len(node.args) - len(node.defaults)
            for index, arg in enumerate(node.args):
                inner = self.bind(arg, inner)
                if index >= first_default:
                    self.expr(node.defaults[index - first_default], bound)
            if isinstance(node, nodes.CallBlock):
                self.expr(node.call, bound)
            self.body(node.body, inner)
        elif isinstance(node, nodes.With):
            inner = set(bound)
            for target, value in zip(node.targets, node.values, strict=False):
                inner = self.bind(target, inner)
                self.expr(value, bound)
            self.body(node.body, inner)
        else:
            if type(node) in _UNSUPPORTED:
                message = f"'{_UNSUPPORTED[type(node)]}' is not supported: a template cannot load other templates"
                raise TemplateSyntaxError(message, node.lineno)
            for child in node.iter_child_nodes():
                (self.stmt if isinstance(child, nodes.Stmt) else self.expr)(child, bound)

    def expr(self, node: nodes.Node, bound: set[str]) -> None:
        if isinstance(node, nodes.Name | nodes.Getattr | nodes.Getitem):
            self.chain(node, bound)
        elif isinstance(node, nodes.CondExpr):  # `a if test else b`: keep source order
            self.expr(node.expr1, bound)
            self.expr(node.test, bound)
            if node.expr2 is not None:
                self.expr(node.expr2, bound)
        else:
            if isinstance(node, nodes.Filter | nodes.Test):
                kind, known = ("filter", self.filters) if isinstance(node, nodes.Filter) else ("test", self.tests)
                if node.name not in known:
                    raise TemplateSyntaxError(f"No {kind} named {node.name!r}.", node.lineno)
            for child in node.iter_child_nodes():
                self.expr(child, bound)

    def chain(self, node: nodes.Node, bound: set[str]) -> None:
        """Record ``root.a['b'][0]`` as one ref; a dynamic subscript ends the constant path."""
        path: list[str | int] = []
        dynamic: list[nodes.Node] = []
        while isinstance(node, nodes.Getattr | nodes.Getitem):
            key = node.attr if isinstance(node, nodes.Getattr) else _constant_key(node.arg)
            if key is not None:
                path.append(key)
            elif isinstance(node, nodes.Getitem):
                path.clear()
                dynamic.append(node.arg)
            node = node.node
        if isinstance(node, nodes.Name):
            self.name(node.name, tuple(reversed(path)), node.lineno, bound)
        else:
            self.expr(node, bound)
        for arg in reversed(dynamic):
            self.expr(arg, bound)

    def bind(self, target: nodes.Node, bound: set[str]) -> set[str]:
        """``bound`` plus the names ``target`` assigns (``x``, ``k, v``, a macro argument)."""
        names = [target] if isinstance(target, nodes.Name) else list(target.find_all(nodes.Name))
        for name in names:
            self.count(name.name, name.lineno)
        return bound | {name.name for name in names}

    def count(self, name: str, line: int) -> int:
        index = self.counts.get((line, name), 0)
        self.counts[line, name] = index + 1
        return index

    def name(self, name: str, path: tuple[str | int, ...], line: int, bound: set[str]) -> None:
        index = self.count(name, line)
        if name not in bound and name not in self.ignored:
            self.found.append((name, path, line, index))


def _columns(text: str, *, whole: bool) -> dict[tuple[int, str], list[int]]:
    """1-based columns of each name used in code (not in text, strings or after a dot), by (line, name)."""
    found: dict[tuple[int, str], list[int]] = {}
    spans = [(0, len(text))] if whole else [match.span() for match in _CODE_RE.finditer(text)]
    line, seen = 1, 0
    for start, end in spans:
        for match in _NAME_RE.finditer(text, start, end):
            if match.group(1):
                pos = match.start(1)
                line += text.count("\n", seen, pos)
                seen = pos
                found.setdefault((line, match.group(1)), []).append(pos - text.rfind("\n", 0, pos))
    return found


def _single_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is one ``{{ ... }}`` with only whitespace around it."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    items = [n for n in tree.body[0].nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    if len(items) == 1 and not isinstance(items[0], nodes.TemplateData):
        return items[0]
    return None


def _lookup_path(expr: nodes.Expr) -> tuple[str, ...] | None:
    """``('a', 'b', 'c')`` for ``a.b['c']`` (names, attributes and string subscripts only), else None."""
    path: list[str] = []
    while True:
        if isinstance(expr, nodes.Getattr):
            path.append(expr.attr)
            expr = expr.node
        elif isinstance(expr, nodes.Getitem) and isinstance(expr.arg, nodes.Const) and isinstance(expr.arg.value, str):
            path.append(expr.arg.value)
            expr = expr.node
        elif isinstance(expr, nodes.Name):
            path.append(expr.name)
            return tuple(reversed(path))
        else:
            return None


_MISS = object()
_DICT_ATTRIBUTES = frozenset(dir(dict))


def _lookup(path: tuple[str, ...], scope: Mapping[str, Any]) -> Any:
    """The value at ``path`` when every step is a key of a plain dict, else ``_MISS`` (the template then runs).

    Gives what the sandbox gives: a key of a dict, as long as the name is not one of dict's own
    attributes (``payload.items`` is the method in Jinja, so such paths run the template).
    """
    value: Any = scope
    for name in path:
        if type(value) is not dict or name in _DICT_ATTRIBUTES:
            return _MISS
        value = value.get(name, _MISS)
        if value is _MISS:
            return _MISS
    return value


def _expression_source(expr: str) -> str:
    """A bare expression; a ``{{ ... }}`` wrapper is blanked out so that positions stay the same."""
    stripped = expr.strip()
    if len(stripped) >= 4 and stripped.startswith("{{") and stripped.endswith("}}"):
        start, end = expr.index("{{"), expr.rindex("}}")
        return f"{expr[:start]}  {expr[start + 2 : end]}  {expr[end + 2 :]}"
    return expr


def _snippet(text: str) -> str:
    flat = text.strip().replace("\n", "\\n")
    return f"'{flat}'" if len(flat) <= 80 else f"'{flat[:77]}...'"


def _describe(exc: Exception) -> str:
    if isinstance(exc, JinjaTemplateError):
        return exc.message or type(exc).__name__
    text = str(exc)
    return text if text and not isinstance(exc, LookupError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def _native(value: Any, *, deep: bool) -> Any:
    """The value of a whole-string expression as plain data; fails on an undefined value in it.

    Only expressions that build containers (``deep``) can hide an undefined value inside one; a
    plain ``steps.x.output`` is not walked, since walking large outputs on every render costs time.
    """
    if isinstance(value, Undefined):
        str(value)  # raises UndefinedError naming what is missing
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, Iterator | range | MappingView):
        value = list(value)  # type: ignore[arg-type]  # a MappingView is iterable
    stack = [value] if deep else []
    while stack:
        item = stack.pop()
        if isinstance(item, Undefined):
            str(item)  # raises UndefinedError naming what is missing
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return value


def _utc_now() -> datetime:
    return datetime.now(UTC)


def base_scope(*, failed: bool, clock: Callable[[], datetime] | None = None) -> dict[str, Callable[[], Any]]:
    """The functions every scope has: ``now()`` (aware UTC), ``always()`` and ``failure()``."""
    return {"now": clock or _utc_now, "always": lambda: True, "failure": lambda: failed}


def is_template(text: str) -> bool:
    """Whether ``text`` has template syntax (``{{`` or ``{%``); other strings are used as they are."""
    return "{{" in text or "{%" in text


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template
    native: bool
    """The template is one expression whose value is the result (else it renders to text)."""
    builds: bool
    """The expression builds lists, dicts or calls, so an undefined value may hide inside its result."""
    path: tuple[str, ...] | None = None
    """For ``{{ a.b['c'] }}``: the names to look up in plain dicts without running the template (see ``_lookup``)."""


_BUILDERS = (nodes.List, nodes.Tuple, nodes.Dict, nodes.Call, nodes.Filter)


class Templates:
    """The template environment of a process: build it once and pass it down.

    Parsing and compiling are cached per source string (``cache_size`` entries each).
    """

    def __init__(self, limits: TemplateLimits | None = None, *, cache_size: int = 4096) -> None:
        self.limits = limits or TemplateLimits()
        self._env = _Sandbox(self.limits)
        self._ignored = frozenset(self._env.globals)
        self._compiled = functools.lru_cache(maxsize=cache_size)(self._compile)
        self._analyzed = functools.lru_cache(maxsize=cache_size)(self._analyze)

    def render_value(self, value: Any, scope: Mapping[str, Any]) -> Any:
        """Render every string inside dicts and lists (keys are not rendered); other values stay as they are."""
        if isinstance(value, str):
            return self.render_string(value, scope)
        if isinstance(value, dict):
            return {key: self.render_value(item, scope) for key, item in value.items()}
        if isinstance(value, list):
            return [self.render_value(item, scope) for item in value]
        if isinstance(value, tuple):
            return tuple(self.render_value(item, scope) for item in value)
        return value

    def render_string(self, text: str, scope: Mapping[str, Any]) -> Any:
        """A whole ``{{ expression }}`` gives its native value, other templates text, other strings themselves."""
        if "{{" not in text and "{%" not in text:
            return text
        return self._run(text, self._compiled(text, "native"), scope)

    def render_text(self, text: str, scope: Mapping[str, Any]) -> str:
        """Render to text even when ``text`` is one whole expression (for keys, names, messages)."""
        if "{{" not in text and "{%" not in text:
            return text
        result: str = self._run(text, self._compiled(text, "text"), scope)
        return result

    def evaluate(self, expr: str, scope: Mapping[str, Any]) -> Any:
        """The value of a bare expression such as ``steps.analyze.output.severity == 'critical'``."""
        return self._run(expr, self._compiled(_expression_source(expr), "expression"), scope)

    def check_syntax(self, text: str) -> None:
        """Raise TemplateError when ``text`` does not parse or uses an unknown filter or test."""
        if is_template(text):
            self._analyzed(text, "template")

    def check_expression(self, expr: str) -> None:
        """Raise TemplateError when the bare expression ``expr`` does not parse."""
        self._analyzed(_expression_source(expr), "expression")

    def template_refs(self, text: str) -> list[Ref]:
        """The scope names ``text`` reads, in source order, without rendering it."""
        return list(self._analyzed(text, "template")) if is_template(text) else []

    def expression_refs(self, expr: str) -> list[Ref]:
        """The scope names the bare expression ``expr`` reads, in source order."""
        return list(self._analyzed(_expression_source(expr), "expression"))

    def _parse(self, source: str, mode: str) -> nodes.Template | nodes.Expr:
        if mode != "expression":
            return self._env.parse(source)
        if not source.strip():
            raise TemplateSyntaxError("the expression is empty", 1)
        parser = Parser(self._env, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateSyntaxError(f"unexpected {str(token.value)!r} after the expression", token.lineno)
        return expr

    def _syntax_error(self, exc: TemplateSyntaxError, mode: str) -> TemplateError:
        kind = "expression" if mode == "expression" else "template"
        return TemplateError(f"{kind} does not parse: {exc.message} (line {exc.lineno})")

    def _analyze(self, source: str, mode: str) -> tuple[Ref, ...]:
        collector = _RefCollector(self._ignored, self._env.filters, self._env.tests)
        try:
            tree = self._parse(source, mode)
            if isinstance(tree, nodes.Template):
                collector.body(tree.body, set())
            else:
                collector.expr(tree, set())
        except TemplateSyntaxError as exc:
            raise self._syntax_error(exc, mode) from None
        return collector.refs(source, whole=mode == "expression")

    def _compile(self, source: str, mode: str) -> _Compiled:
        try:
            tree = self._parse(source, mode)
            if isinstance(tree, nodes.Template):
                expr = _single_expression(tree) if mode == "native" else None
            else:
                expr = tree
            if expr is not None:  # `result = <expr>`, as Environment.compile_expression does
                tree = nodes.Template([nodes.Assign(nodes.Name("result", "store", lineno=1), expr, lineno=1)], lineno=1)
            for loader in tree.find_all(tuple(_UNSUPPORTED)):
                message = f"'{_UNSUPPORTED[type(loader)]}' is not supported: a template cannot load other templates"
                raise TemplateSyntaxError(message, loader.lineno)
            for loop in tree.find_all(nodes.For):  # every loop step counts against the time bound
                loop.iter = nodes.Filter(loop.iter, _LOOP_GUARD, [], [], None, None, lineno=loop.lineno)
            tree.set_environment(self._env)
            template = self._env.from_string(tree)  # type: ignore[arg-type]  # a Template node by now
        except TemplateSyntaxError as exc:
            raise self._syntax_error(exc, mode) from None
        if expr is None:
            return _Compiled(template, native=False, builds=False)
        builds = isinstance(expr, _BUILDERS) or next(expr.find_all(_BUILDERS), None) is not None
        return _Compiled(template, native=True, builds=builds, path=_lookup_path(expr))

    def _run(self, source: str, compiled: _Compiled, scope: Mapping[str, Any]) -> Any:
        if compiled.path is not None:  # `{{ payload.service }}`, the most common template, needs no rendering
            value = _lookup(compiled.path, scope)
            if value is not _MISS and not isinstance(value, Undefined):
                return _native(value, deep=False)
        token = _BUDGET.set(_Budget(self.limits.max_seconds))
        template = compiled.template
        try:
            context = template.new_context(scope if isinstance(scope, dict) else dict(scope))
            if compiled.native:
                for _ in template.root_render_func(context):
                    pass
                return _native(context.vars["result"], deep=compiled.builds)
            parts: list[str] = []
            size, limit = 0, self.limits.max_output
            for chunk in template.root_render_func(context):
                size += len(chunk)
                if size > limit:
                    raise _Refused(f"template output exceeds {_human(limit)}")
                parts.append(chunk)
            return "".join(parts)
        except WeirError:
            raise
        except RecursionError:
            raise TemplateError(
                f"template error in {_snippet(source)}: recursion is too deep (does a macro call itself?)"
            ) from None
        except _Refused as exc:
            raise TemplateError(f"template error in {_snippet(source)}: {exc}") from None
        except Exception as exc:
            raise TemplateError(f"template error in {_snippet(source)}: {_describe(exc)}") from exc
        finally:
            _BUDGET.reset(token)


@functools.cache
def default_templates() -> Templates:
    """A shared ``Templates`` with the default limits, for callers that have none passed in."""
    return Templates()


def render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    """``default_templates().render_value``."""
    return default_templates().render_value(value, scope)


def render_string(text: str, scope: Mapping[str, Any]) -> Any:
    """``default_templates().render_string``."""
    return default_templates().render_string(text, scope)


def evaluate(expr: str, scope: Mapping[str, Any]) -> Any:
    """``default_templates().evaluate``."""
    return default_templates().evaluate(expr, scope)


def template_refs(text: str) -> list[Ref]:
    """``default_templates().template_refs``."""
    return default_templates().template_refs(text)


def expression_refs(expr: str) -> list[Ref]:
    """``default_templates().expression_refs``."""
    return default_templates().expression_refs(expr)
