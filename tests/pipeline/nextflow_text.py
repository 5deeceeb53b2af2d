"""Read the pipeline's Nextflow files the way Nextflow would, for the contract tests.

No Nextflow runtime exists here, so this evaluates the small Groovy subset the
pipeline's module scripts, ``ext.args`` closures and ``params`` blocks are written in:
strings with ``${}``/``$name`` interpolation, ``?:``, ``? :``, ``!``, ``==``/``!=``, ``in``,
``&&``/``||``, list literals, ``.join()``/``.trim()``/``.toString()``/``.toBoolean()``,
property access on maps and calls of the functions a scope provides (``System.getenv``).
Anything outside the subset raises ``GroovyError``, so the pipeline code stays within
what the tests check. Syntax itself is checked by reftrace, a real Nextflow parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------------------
# The Groovy subset
# --------------------------------------------------------------------------------------


class BlankList(list):
    """Several staged files: Nextflow renders them blank-separated in a script."""

    def __str__(self):
        return " ".join(str(item) for item in self)


class GroovyError(ValueError):
    """The text uses Groovy outside the subset these tests evaluate."""


TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>\"\"\"|"|')
      | (?P<number>\d+\.\d+|\d+)
      | (?P<name>[A-Za-z_]\w*)
      | (?P<op>\?:|==|!=|&&|\|\||[?:!.,()\[\]])
    )""",
    re.VERBOSE,
)


def _string_end(text: str, start: int, quote: str) -> int:
    """Index just past the closing quote of a string whose opening quote ends at ``start``."""
    i = start
    depth = 0
    while i < len(text):
        if text.startswith("\\", i):
            i += 2
            continue
        if quote != "'" and text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if depth and text[i] == "}":
            depth -= 1
        elif not depth and text.startswith(quote, i):
            return i + len(quote)
        i += 1
    raise GroovyError(f"unterminated string: {text[start - len(quote) : start + 40]!r}")


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split an expression into (kind, text) tokens; strings keep their raw body."""
    tokens, i = [], 0
    while i < len(text):
        if not text[i:].strip():
            break
        match = TOKEN.match(text, i)
        if not match:
            raise GroovyError(f"cannot read {text[i : i + 40]!r}")
        kind = match.lastgroup
        if kind == "string":
            quote = match.group("string")
            end = _string_end(text, match.end(), quote)
            tokens.append(
                ("string" if quote == "'" else "gstring", text[match.end() : end - len(quote)])
            )
            i = end
        else:
            tokens.append((kind, match.group(kind)))
            i = match.end()
    return tokens


def render_gstring(body: str, scope: dict) -> str:
    """Interpolate ``${expr}`` and ``$name.attr`` and apply Groovy escapes."""
    out, i = [], 0
    while i < len(body):
        if body.startswith("\\", i):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
            i += 2
        elif body.startswith("${", i):
            end = _closing_brace(body, i + 2)
            out.append(to_groovy_string(evaluate(body[i + 2 : end], scope)))
            i = end + 1
        elif body.startswith("$", i) and re.match(r"\$[A-Za-z_]", body[i:]):
            dotted = re.match(r"\$([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", body[i:]).group(1)
            out.append(to_groovy_string(evaluate(dotted, scope)))
            i += len(dotted) + 1
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the brace opened just before ``start``."""
    depth, i = 1, start
    while i < len(text):
        if text[i] in "'\"":
            quote = '"""' if text.startswith('"""', i) else text[i]
            i = _string_end(text, i + len(quote), quote)
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise GroovyError(f"unbalanced braces in {text[start : start + 60]!r}")


def to_groovy_string(value) -> str:
    """``value`` as Groovy prints it inside a string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Parser:
    """Recursive descent over the tokens, evaluating as it goes (Groovy truth is Python's)."""

    def __init__(self, text: str, scope: dict):
        self.tokens = tokenize(text)
        self.pos = 0
        self.scope = scope

    def peek(self, value=None):
        if self.pos >= len(self.tokens):
            return None
        token = self.tokens[self.pos]
        return token if value is None or token[1] == value else None

    def take(self, value=None):
        token = self.peek(value)
        if token is None:
            raise GroovyError(
                f"expected {value or 'a token'} at {self.tokens[self.pos : self.pos + 3]}"
            )
        self.pos += 1
        return token

    def parse(self):
        value = self.ternary()
        if self.pos != len(self.tokens):
            raise GroovyError(f"unexpected {self.tokens[self.pos :]}")
        return value

    def ternary(self):
        condition = self.either()
        if self.peek("?:"):
            self.take()
            other = self.ternary()
            return condition if condition else other
        if self.peek("?"):
            self.take()
            yes = self.ternary()
            self.take(":")
            no = self.ternary()
            return yes if condition else no
        return condition

    def either(self):
        value = self.both()
        while self.peek("||"):
            self.take()
            right = self.both()
            value = bool(value) or bool(right)
        return value

    def both(self):
        value = self.equality()
        while self.peek("&&"):
            self.take()
            right = self.equality()
            value = bool(value) and bool(right)
        return value

    def equality(self):
        left = self.unary()
        if self.peek("==") or self.peek("!="):
            op = self.take()[1]
            right = self.unary()
            return (left == right) if op == "==" else (left != right)
        if self.peek("in"):
            self.take()
            return left in self.unary()
        return left

    def unary(self):
        if self.peek("!"):
            self.take()
            return not self.unary()
        return self.postfix()

    def postfix(self):
        value = self.primary()
        while self.peek("."):
            self.take()
            name = self.take()[1]
            if self.peek("("):
                self.take()
                args = self.arguments(")")
                value = call_method(value, name, args)
            elif isinstance(value, dict):
                value = value.get(name)
            else:
                raise GroovyError(f"no property {name} on {value!r}")
        return value

    def arguments(self, closing):
        args = []
        while not self.peek(closing):
            args.append(self.ternary())
            if not self.peek(closing):
                self.take(",")
        self.take(closing)
        return args

    def primary(self):
        kind, text = self.take()
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", text)
        if kind == "gstring":
            return render_gstring(text, self.scope)
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "name":
            if text in ("null", "true", "false"):
                return {"null": None, "true": True, "false": False}[text]
            if text not in self.scope:
                raise GroovyError(f"unknown name {text!r}")
            return self.scope[text]
        if text == "[":
            return self.arguments("]")
        if text == "(":
            value = self.ternary()
            self.take(")")
            return value
        raise GroovyError(f"unexpected {text!r}")


def call_method(value, name, args):
    """Call ``list.join(sep)``, ``str.trim()``, ``x.toString()``, ``str.toBoolean()``,
    ``str.replace(a, b)`` or a
    function the scope provides (a map of callables, e.g. ``System.getenv``)."""
    if name == "join" and isinstance(value, list):
        return (args[0] if args else "").join(to_groovy_string(item) for item in value)
    if name == "trim" and isinstance(value, str):
        return value.strip()
    if name == "toString" and not args:
        return to_groovy_string(value)
    if name == "replace" and isinstance(value, str) and len(args) == 2:
        return value.replace(args[0], args[1])  # String.replace(CharSequence, CharSequence)
    if name == "toBoolean" and isinstance(value, str) and not args:
        # Groovy's String.toBoolean(): only "true", "y" and "1" (any case, trimmed) are true.
        return value.strip().lower() in ("true", "y", "1")
    if isinstance(value, dict) and callable(value.get(name)):
        return value[name](*args)
    raise GroovyError(f"method {name}({args}) on {value!r} is outside the tested subset")


def evaluate(expression: str, scope: dict):
    """Evaluate one Groovy expression of the supported subset."""
    return _Parser(expression, scope).parse()


def strip_comments(text: str) -> str:
    """Drop ``//`` line comments and ``/* */`` blocks outside strings."""
    out, i = [], 0
    while i < len(text):
        if text.startswith('"""', i) or text[i] in "'\"":
            quote = '"""' if text.startswith('"""', i) else text[i]
            end = _string_end(text, i + len(quote), quote)
            out.append(text[i:end])
            i = end
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def statements(text: str) -> list[str]:
    """Split Groovy code into statements at newlines outside brackets and strings."""
    result, current, depth, i = [], [], 0, 0
    while i < len(text):
        char = text[i]
        if text.startswith('"""', i) or char in "'\"":
            quote = '"""' if text.startswith('"""', i) else char
            end = _string_end(text, i + len(quote), quote)
            current.append(text[i:end])
            i = end
            continue
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "\n" and depth == 0:
            if "".join(current).strip():
                result.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    if "".join(current).strip():
        result.append("".join(current).strip())
    return result


def run_definitions(code: str, scope: dict) -> dict:
    """Run ``def x = ...`` statements; return the scope with the new names."""
    scope = dict(scope)
    for statement in statements(strip_comments(code)):
        match = re.fullmatch(r"def\s+(\w+)\s*=\s*(.*)", statement, re.DOTALL)
        if not match:
            raise GroovyError(
                f"only `def x = ...` statements are supported here, not {statement!r}"
            )
        scope[match.group(1)] = evaluate(match.group(2), scope)
    return scope


def block_after(text: str, header: str) -> str:
    """Return the text inside the braces that follow ``header`` (a regex) in ``text``."""
    match = re.search(header + r"\s*\{", text)
    if not match:
        raise KeyError(header)
    return text[match.end() : _closing_brace(text, match.end())]


# --------------------------------------------------------------------------------------
# The pipeline files, read
# --------------------------------------------------------------------------------------


def parse_params_block(path: Path, project_dir: Path) -> dict:
    """Read ``params { name = value }``: literals as Python values, others as Expression."""
    text = strip_comments(path.read_text())
    values = {}
    for statement in statements(block_after(text, r"(?m)^params")):
        name, _, expression = statement.partition("=")
        try:
            values[name.strip()] = evaluate(expression.strip(), {"projectDir": str(project_dir)})
        except GroovyError:
            values[name.strip()] = Expression(expression.strip())
    return values


@dataclass(frozen=True)
class Expression:
    """A param default computed at run time (e.g. a time stamp): it has no schema default."""

    source: str


@dataclass
class Process:
    """One module's process: its name and the text of each section (input:, output:, ...)."""

    name: str
    path: Path
    sections: dict[str, str]

    @property
    def inputs(self) -> list[tuple[str, str, str | None]]:
        """(val|path, name, stageAs) in declaration order."""
        pattern = r"\b(val|path)\s*\(?\s*(\w+)(?:\s*,\s*stageAs:\s*'([^']*)')?"
        return re.findall(pattern, self.sections.get("input", ""))

    @property
    def outputs(self) -> list[dict]:
        """Declared outputs: path patterns (kind "path") and version evals (kind "eval").

        An eval output is ``tuple val(step), val('tool'), eval('command')``: ``step`` is the
        Groovy expression naming the step the version is reported under.
        """
        declared = []
        for line in strip_comments(self.sections["output"]).splitlines():
            emit = re.search(r"emit:\s*(\w+)", line)
            common = {"emit": emit and emit.group(1), "topic": "topic: versions" in line}
            for match in re.finditer(r"""path\s*\(?\s*(["'])(.*?)\1""", line):
                optional = "optional: true" in line
                declared.append(
                    {
                        "kind": "path",
                        "pattern": match.group(2),
                        "quote": match.group(1),
                        "optional": optional,
                        **common,
                    }
                )
            for match in re.finditer(r"val\(([^()]*)\),\s*val\('(\w+)'\),\s*eval\('(.*?)'\)", line):
                declared.append(
                    {
                        "kind": "eval",
                        "step": match.group(1),
                        "tool": match.group(2),
                        "command": match.group(3),
                        **common,
                    }
                )
        return declared

    def script_parts(self, section: str = "script") -> tuple[str, str]:
        """Return the Groovy statements before the script string, and the string's body."""
        text = self.sections[section]
        start = text.index('"""')
        end = _string_end(text, start + 3, '"""')
        return text[:start], text[start + 3 : end - 3]

    def render(self, scope: dict, section: str = "script") -> str:
        """The shell script Nextflow would run for this scope (inputs, task, params)."""
        code, body = self.script_parts(section)
        return render_gstring(body, run_definitions(code, scope))


def read_process(path: Path) -> Process:
    """Read the (single) process of a module file."""
    text = strip_comments(path.read_text())
    name = re.search(r"(?m)^process\s+(\w+)", text).group(1)
    body = block_after(text, r"(?m)^process\s+\w+")
    labels = list(re.finditer(r"(?m)^\s{4}(input|output|when|script|stub):\s*$", body))
    sections = {}
    for label, following in zip(labels, [*labels[1:], None], strict=True):
        sections[label.group(1)] = body[label.end() : following.start() if following else len(body)]
    return Process(name=name, path=path, sections=sections)


def ext_args_closures(modules_config: Path) -> dict[str, str]:
    """Process name -> the source of its ``ext.args`` closure in conf/modules.config.

    A selector ``'A|B'`` gives both processes the closure.
    """
    text = strip_comments(modules_config.read_text())
    closures = {}
    for match in re.finditer(r"withName:\s*'([\w|]+)'\s*\{", text):
        block = text[match.end() : _closing_brace(text, match.end())]
        args = re.search(r"ext\.args\s*=\s*\{", block)
        if args:
            for name in match.group(1).split("|"):
                closures[name] = block[args.end() : _closing_brace(block, args.end())]
    return closures


def used_params(paths, root: Path) -> dict[str, list[str]]:
    """params.X referenced in code (not the params {} declaration blocks) -> where."""
    used: dict[str, list[str]] = {}
    for path in paths:
        text = strip_comments(path.read_text())
        if path.suffix == ".config":
            try:
                declared = block_after(text, r"(?m)^params")
                text = text.replace(declared, "")
            except KeyError:
                pass
        for name in re.findall(r"\bparams\.(\w+)", text):
            used.setdefault(name, []).append(str(path.relative_to(root)))
    return used


def schema_params(schema: dict) -> dict[str, dict]:
    """Every parameter of nextflow_schema.json, across its groups."""
    return {
        name: spec
        for group in schema["$defs"].values()
        for name, spec in group["properties"].items()
    }
