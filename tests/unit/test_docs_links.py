"""Every relative link in README.md and docs/ leads somewhere inside the repository: a
Markdown link or image (inline or by reference) and an ``<img src>`` resolve to a file or
folder of the repository, and an anchor (``#...``) to a heading of its target, slugged as
GitHub does. External links (http, https, mailto) are not followed. Links inside code
(fenced blocks, inline code) are text, not links."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_IMG = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines outside fenced code blocks, with inline code blanked out."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        opening = _FENCE.match(line)
        if opening:
            if fence is None:
                fence = opening.group(1)
            elif opening.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield number, _INLINE_CODE.sub(lambda m: " " * len(m.group()), line)


def links(text: str) -> Iterator[tuple[int, str]]:
    for number, line in _prose_lines(text):
        for pattern in (_INLINE, _REFERENCE, _IMG):
            for match in pattern.finditer(line):
                yield number, match.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text: markup dropped, entities read, lower case,
    punctuation other than '-' and '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = html.unescape(re.sub(r"<[^>]+>", "", text)).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated one gets -1, -2, ..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _number, line in _prose_lines(path.read_text()):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken(source: Path, target: str) -> str | None:
    """Why ``target``, linked from ``source``, does not resolve; None when it does."""
    if _EXTERNAL.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    resolved = (source.parent / path_part).resolve() if path_part else source
    if resolved != ROOT and ROOT not in resolved.parents:
        return f"{target}: outside the repository"
    if not resolved.exists():
        return f"{target}: no such file or folder"
    if anchor:
        if resolved.is_dir() or resolved.suffix != ".md":
            return f"{target}: an anchor into something that is not a Markdown file"
        if anchor not in anchors(resolved):
            return f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}"
    return None


def problems(path: Path) -> list[str]:
    where = path.relative_to(ROOT)
    return [f"{where}:{number}: {why}" for number, target in links(path.read_text())
            if (why := broken(path, target)) is not None]


def test_the_pages_are_found() -> None:
    pages = markdown_files()
    assert ROOT / "docs" / "README.md" in pages
    assert len(pages) > 3


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(path: Path) -> None:
    assert problems(path) == []


def test_the_check_finds_broken_links(tmp_path: Path) -> None:
    page = ROOT / "docs" / "README.md"
    assert broken(page, "architecture.md#the-flow-of-a-request") is None
    assert broken(page, "../README.md") is None
    assert broken(page, "../deploy") is None
    assert broken(page, "https://example.org/nowhere") is None
    assert broken(page, "missing.md") == "missing.md: no such file or folder"
    assert broken(page, "architecture.md#no-such-heading") is not None
    assert broken(page, "../../shared/ARCHITECTURE.md") is not None  # outside the repo
    assert broken(page, "../deploy#x") is not None
    text = ("[a](one.md) ![b](two.png) <img src=\"three.svg\">\n[c]: four.md\n"
            "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n")
    assert [t for _, t in links(text)] == ["one.md", "two.png", "three.svg", "four.md"]


def test_slugs_follow_github() -> None:
    assert slug("No order is sent twice") == "no-order-is-sent-twice"
    assert slug("Safety: trading states, kill switch") == "safety-trading-states-kill-switch"
    assert slug("`orderstream replay`") == "orderstream-replay"
    assert slug("Redis ACL and TLS (deploy/)") == "redis-acl-and-tls-deploy"
    assert slug("max_in_flight & friends") == "max_in_flight--friends"
    assert slug("[limits.&lt;account&gt;]") == "limitsaccount"
