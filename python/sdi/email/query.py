"""The email search query language: tokenizer, parser and a reference evaluator.

Text is tokenized the same way for documents and queries: case-folded,
common Latin accents removed (``Émile`` matches ``emile``), split on every
character that is not a letter or digit in Unicode's sense (``_``
included), and every email address is also kept as one whole token, only
case-folded (``alice@example.com`` gives ``alice``, ``example``, ``com``
and ``alice@example.com``). The compiled index (``rust/sdi-lsm``) parses the
same language; :func:`parse` is its reference.

A query is

* words, all of which must match (``AND`` may be written, it is the default);
* ``pre*``: any token that starts with ``pre``;
* ``"a phrase"``: the tokens next to each other in one field;
* ``field:word`` (or ``field:"a phrase"``, ``field:pre*``) with field one of
  ``from``, ``to``, ``subject``, ``body``, ``attachment``;
* ``a OR b``; ``NOT a`` or ``-a``; parentheses.

Operators are upper-case (``or`` is a word). ``OR`` binds looser than the
implicit ``AND``: ``a b OR c`` is ``(a AND b) OR c``.

>>> tokenize("Re: Ünïcode_Test, mail bob@Example.com!")
['re', 'unicode', 'test', 'mail', 'bob', 'example', 'com', 'bob@example.com']
>>> parse('from:alice (report OR "weekly sum*") -draft')
And(children=(Term(field='from', token='alice', prefix=False), Or(children=(Term(field=None, \
token='report', prefix=False), Phrase(field=None, tokens=('weekly', 'sum'))... Not(child=Term(\
field=None, token='draft', prefix=False))))
>>> doc = document({"from": "Alice <alice@x.org>", "subject": "Weekly report"})
>>> matches(parse("from:alice weekly -draft"), doc), matches(parse('"report weekly"'), doc)
(True, False)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sdi.errors import InvalidArgument

__all__ = [
    "FIELDS",
    "And",
    "Document",
    "Node",
    "Not",
    "Or",
    "Phrase",
    "Term",
    "document",
    "fold",
    "matches",
    "parse",
    "positional_tokens",
    "tokenize",
]

#: The fields a query may name.
FIELDS = ("from", "to", "subject", "body", "attachment")
QUERY_CHARS_MAX = 2000
QUERY_NODES_MAX = 200

_WORD = re.compile(r"[^\W_]+")
_ADDRESS = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")

# Common Latin letters with diacritics folded to ASCII, as the compiled
# index's tokenizer does (``rust/sdi-lsm/src/tokenize.rs``): ``Réunion`` is
# ``reunion``. Words are folded; whole addresses are only case-folded.
_FOLDS = {
    "a": "àáâãäåāăą", "ae": "æ", "c": "çćĉċč", "d": "ďđð", "e": "èéêëēĕėęě",
    "g": "ĝğġģ", "h": "ĥħ", "i": "ìíîïĩīĭįı", "j": "ĵ", "k": "ķ", "l": "ĺļľŀł",
    "n": "ñńņň", "o": "òóôõöøōŏő", "oe": "œ", "r": "ŕŗř", "s": "śŝşš", "ss": "ß",
    "t": "ţťŧ", "th": "þ", "u": "ùúûüũūŭůűų", "w": "ŵ", "y": "ýÿŷ", "z": "źżž",
}  # fmt: skip
_FOLD = str.maketrans({c: ascii for ascii, chars in _FOLDS.items() for c in chars})


def fold(text: str) -> str:
    """``text`` case-folded, with common Latin accents removed (``Émile`` -> ``emile``)."""
    return text.casefold().translate(_FOLD)


def positional_tokens(text: str) -> list[str]:
    """The folded runs of letters and digits of ``text``, in order (what phrases match)."""
    return _WORD.findall(fold(text))


def tokenize(text: str) -> list[str]:
    """Every token of ``text``: the positional ones, then each email address whole."""
    tokens = _WORD.findall(fold(text))
    folded = text.casefold()
    tokens.extend(match.group(0).strip(".-") for match in _ADDRESS.finditer(folded))
    return tokens


@dataclass(frozen=True)
class Term:
    """One token (or, with ``prefix``, every token starting with it), in a field or any."""

    field: str | None
    token: str
    prefix: bool = False


@dataclass(frozen=True)
class Phrase:
    """Tokens next to each other, in order, in one field."""

    field: str | None
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Term | Phrase | And | Or | Not

_LEX = re.compile(r'\s+|(?P<paren>[()])|"(?P<phrase>[^"]*)"?|(?P<word>[^\s()"]+)')


def _lex(query: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind is ``(``, ``)``, ``phrase``, ``word`` or an operator."""
    out: list[tuple[str, str]] = []
    position = 0
    while position < len(query):
        match = _LEX.match(query, position)
        assert match is not None  # every character matches one branch
        position = match.end()
        if match.group("paren"):
            out.append((match.group("paren"), ""))
        elif match.group("phrase") is not None:
            out.append(("phrase", match.group("phrase")))
        elif match.group("word"):
            word = match.group("word")
            following = query[position] if position < len(query) else ""
            if word in ("AND", "OR", "NOT"):
                out.append((word, ""))
            elif word == "-" and following in ('"', "("):
                out.append(("NOT", ""))  # -"a phrase", -(a OR b)
            elif word.endswith(":") and following == '"':
                if word.startswith("-"):
                    out.append(("NOT", ""))
                    word = word[1:]
                # field:"a phrase"
                phrase = _LEX.match(query, position)
                assert phrase is not None
                position = phrase.end()
                out.append(("phrase", word + (phrase.group("phrase") or "")))
            else:
                out.append(("word", word))
    return out


class _Parser:
    def __init__(self, query: str) -> None:
        if len(query) > QUERY_CHARS_MAX:
            raise InvalidArgument(f"a query is at most {QUERY_CHARS_MAX} characters")
        self.tokens = _lex(query)
        self.position = 0
        self.nodes = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > QUERY_NODES_MAX:
            raise InvalidArgument(f"a query has at most {QUERY_NODES_MAX} terms")

    def parse_or(self) -> Node | None:
        children = [self.parse_and()]
        while self.peek() == "OR":
            self.position += 1
            children.append(self.parse_and())
        kept = [child for child in children if child is not None]
        if len(children) > 1 and len(kept) < len(children):
            raise InvalidArgument("OR needs something on both sides")
        if not kept:
            return None
        return kept[0] if len(kept) == 1 else Or(tuple(kept))

    def parse_and(self) -> Node | None:
        children: list[Node] = []
        while self.peek() not in (None, "OR", ")"):
            if self.peek() == "AND":
                self.position += 1
                continue
            node = self.parse_unary()
            if node is not None:
                children.append(node)
        if not children:
            return None
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_unary(self) -> Node | None:
        kind, text = self.tokens[self.position]
        if kind == "NOT":
            self.position += 1
            if self.peek() in (None, "OR", ")"):
                raise InvalidArgument("NOT needs something after it")
            child = self.parse_unary()
            return None if child is None else Not(child)
        if kind == "word" and text.startswith("-") and len(text) > 1:
            self.tokens[self.position] = ("word", text[1:])
            child = self.parse_unary()
            return None if child is None else Not(child)
        return self.parse_atom()

    def parse_atom(self) -> Node | None:
        kind, text = self.tokens[self.position]
        self.position += 1
        if kind == "(":
            node = self.parse_or()
            if self.peek() != ")":
                raise InvalidArgument("a '(' is not closed")
            self.position += 1
            return node
        if kind == ")":  # pragma: no cover - parse_and stops before ')'
            raise InvalidArgument("a ')' without its '('")
        self.count()
        field: str | None = None
        if ":" in text:
            name, _, rest = text.partition(":")
            if name.casefold() in FIELDS:
                field, text = name.casefold(), rest
        if kind == "phrase":
            return _phrase(field, text)
        return _word(field, text)


def _phrase(field: str | None, text: str) -> Node | None:
    tokens = tuple(positional_tokens(text))
    if not tokens:
        return None
    if len(tokens) == 1:
        return Term(field, tokens[0])
    return Phrase(field, tokens)


def _word(field: str | None, text: str) -> Node | None:
    prefix = text.endswith("*")
    text = text.rstrip("*")
    folded = text.casefold()
    address = _ADDRESS.fullmatch(folded)
    if address is not None and not prefix:
        return Term(field, folded)
    tokens = positional_tokens(folded)
    if not tokens:
        return None
    if len(tokens) == 1:
        return Term(field, tokens[0], prefix)
    if prefix:
        # ``foo.ba*``: the phrase of the whole tokens and a prefix on the last one.
        return And((Phrase(field, tuple(tokens)), Term(field, tokens[-1], True)))
    return Phrase(field, tuple(tokens))


def parse(query: str) -> Node:
    """The query's syntax tree; :class:`~sdi.errors.InvalidArgument` when it has no terms."""
    parser = _Parser(query)
    node = parser.parse_or()
    if parser.peek() == ")":
        raise InvalidArgument("a ')' without its '('")
    if node is None:
        raise InvalidArgument("the query has no words to search for")
    return node


@dataclass(frozen=True)
class Document:
    """A message's searchable text: positional tokens and the token set of each field."""

    positions: Mapping[str, tuple[str, ...]]
    tokens: Mapping[str, frozenset[str]]


def document(fields: Mapping[str, str]) -> Document:
    """Tokenizes a message's fields (unknown fields are searched only without a field name)."""
    positions = {name: tuple(positional_tokens(text)) for name, text in fields.items()}
    tokens = {name: frozenset(tokenize(text)) for name, text in fields.items()}
    return Document(positions, tokens)


def _has_phrase(tokens: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    width = len(phrase)
    first = phrase[0]
    return any(
        tokens[i] == first and tokens[i : i + width] == phrase
        for i in range(len(tokens) - width + 1)
    )


def matches(node: Node, doc: Document) -> bool:
    """Whether ``doc`` matches the query tree (the brute-force reference semantics)."""
    if isinstance(node, Term):
        names = [node.field] if node.field is not None else list(doc.tokens)
        for name in names:
            tokens = doc.tokens.get(name, frozenset())
            if node.prefix:
                if any(token.startswith(node.token) for token in tokens):
                    return True
            elif node.token in tokens:
                return True
        return False
    if isinstance(node, Phrase):
        names = [node.field] if node.field is not None else list(doc.positions)
        return any(_has_phrase(doc.positions.get(name, ()), node.tokens) for name in names)
    if isinstance(node, And):
        return all(matches(child, doc) for child in node.children)
    if isinstance(node, Or):
        return any(matches(child, doc) for child in node.children)
    return not matches(node.child, doc)
