"""Reading a user's prompt file (.txt, .tsv, .csv or .jsonl) into records of prompt, category, line.

The file is the open world's whole vocabulary, so a mistake in it is reported, not guessed
around: every error names the file, the line and the problem, and a file either loads whole or
raises PromptFileError. Two lines whose prompts share a `normalise` key are one prompt: under
the same category the later line is skipped with a warning (PartiPrompts has such a pair, a
final period apart), under different ones the file is refused, since the prompt's category
would be a guess.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evolvedirector.worlds.base import OTHER
from evolvedirector.worlds.prompts.proposals import normalise

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".tsv", ".csv", ".jsonl")
CATEGORY_FIELDS = ("category", "tag")  # the first one present names a prompt's category
_SHOWN_CHARS = 80  # of a prompt quoted in a message

Row = tuple[int, str, str | None]  # (line, prompt, category or None)


@dataclass(frozen=True)
class PromptRecord:
    prompt: str
    category: str
    line: int  # where the prompt starts in its file, for messages


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file, the line and the problem."""


def read_prompt_file(path: str | Path) -> list[PromptRecord]:
    """Every prompt of the file, in file order, or PromptFileError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PromptFileError(f"{path}: unsupported suffix {suffix or '(none)'!r}; supported: {', '.join(SUFFIXES)}")
    text = _decode(path)
    if suffix == ".txt":
        rows: Iterable[Row] = ((number, line, None) for number, line in _lines(text) if line.strip())
    elif suffix == ".jsonl":
        rows = _jsonl_rows(path, text)
    else:
        rows = _table_rows(path, text, "\t" if suffix == ".tsv" else ",")
    return _records(path, rows)


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(f"{path}: no such file") from None
    except OSError as error:
        raise PromptFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    data = data.removeprefix(codecs.BOM_UTF8)  # spreadsheets write one; it is no part of a prompt
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise PromptFileError(f"{path} line {line}: not UTF-8 (byte 0x{data[error.start]:02x})") from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    # StringIO splits at \n, \r\n and \r only, as editors number lines; str.splitlines would
    # also split at form feeds and separators that belong inside a (then refused) prompt.
    for number, line in enumerate(io.StringIO(text, newline=""), 1):
        yield number, line.rstrip("\r\n")


def _jsonl_rows(path: Path, text: str) -> Iterator[Row]:
    for number, line in _lines(text):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise PromptFileError(f"{where}: not JSON ({getattr(error, 'msg', 'nested too deeply')})") from None
        if not isinstance(value, dict):
            raise PromptFileError(f"{where}: not a JSON object")
        if not isinstance(value.get("prompt"), str):
            raise PromptFileError(f'{where}: no "prompt" string')
        field = next((name for name in CATEGORY_FIELDS if value.get(name) is not None), None)
        category = None if field is None else value[field]
        if category is not None and not isinstance(category, str):
            raise PromptFileError(f'{where}: "{field}" is not a string')
        yield number, value["prompt"], category


def _table_rows(path: Path, text: str, delimiter: str) -> Iterator[Row]:
    rows = _csv_rows(path, text, delimiter)
    header_line, header = next(((n, row) for n, row in rows if any(cell.strip() for cell in row)), (0, []))
    if not header:
        raise PromptFileError(f"{path}: empty file")
    columns = [cell.strip().casefold() for cell in header]
    if "prompt" not in columns:
        found = ", ".join(f'"{cell.strip()}"' for cell in header)
        raise PromptFileError(f'{path} line {header_line}: no "prompt" column (columns: {found})')
    prompt_at = columns.index("prompt")
    category_at = next((columns.index(name) for name in CATEGORY_FIELDS if name in columns), None)
    for number, row in rows:
        if any(cell.strip() for cell in row):
            prompt = row[prompt_at] if prompt_at < len(row) else ""
            category = row[category_at] if category_at is not None and category_at < len(row) else None
            yield number, prompt, category


def _csv_rows(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) per record. A .tsv is read without quoting, then a cell that is one
    valid quoted field is unquoted: PartiPrompts opens a prompt with a quoted word ("G I G G L E"
    painted ...), which quoting would silently rewrite, and a tab-separated cell holds no tab or
    newline that quotes would be needed for."""
    tsv = delimiter == "\t"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    start = 1
    try:
        for row in reader:
            yield start, [_unquoted(cell) for cell in row] if tsv else row
            start = reader.line_num + 1
    except csv.Error as error:
        raise PromptFileError(f"{path} line {reader.line_num}: {error}") from None


def _unquoted(cell: str) -> str:
    inner = cell[1:-1]
    if len(cell) >= 2 and cell[0] == cell[-1] == '"' and '"' not in inner.replace('""', ""):
        return inner.replace('""', '"')
    return cell


def _records(path: Path, rows: Iterable[Row]) -> list[PromptRecord]:
    records: dict[str, PromptRecord] = {}  # by key, in file order
    for line, prompt, category in rows:
        where = f"{path} line {line}"
        prompt = prompt.strip()
        if not prompt:
            raise PromptFileError(f"{where}: empty prompt")
        control = next((ch for ch in prompt if unicodedata.category(ch) == "Cc"), None)
        if control is not None:
            raise PromptFileError(f"{where}: control character U+{ord(control):04X} in the prompt")
        key = normalise(prompt)
        if not key:
            raise PromptFileError(f'{where}: prompt "{_shown(prompt)}" is only punctuation or symbols')
        category = (category or "").strip() or OTHER
        first = records.get(key)
        if first is None:
            records[key] = PromptRecord(prompt, category, line)
        elif first.category != category:
            raise PromptFileError(f'{where}: duplicate prompt "{_shown(prompt)}" (first on line {first.line}) '
                                  f'with another category ("{category}", not "{first.category}")')
        else:
            log.warning('%s: duplicate prompt "%s" (first on line %d) skipped', where, _shown(prompt), first.line)
    if not records:
        raise PromptFileError(f"{path}: no prompts")
    return list(records.values())


def _shown(prompt: str) -> str:
    return prompt if len(prompt) <= _SHOWN_CHARS else prompt[: _SHOWN_CHARS - 3] + "..."
