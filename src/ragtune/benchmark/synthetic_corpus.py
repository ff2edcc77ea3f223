"""A seeded synthetic legal-like corpus of any size, for the scale benchmark (issue 34): chunks recombined from
the sentences of a source corpus (the default's data/fetch/corpus.jsonl, else a few built-in provisions), with
chunk lengths drawn from the source's own length distribution, grouped into articles with headings, plus test
questions about a seeded sample of chunks. The same (source, n, seed) gives the same files, byte for byte.

    python -m ragtune.benchmark.synthetic_corpus --chunks 100000 --out data/bench/corpora/100000
"""

from __future__ import annotations

import argparse
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..records import Chunk, TestQuestion, load_corpus, write_jsonl

_SENTENCE = re.compile(r"(?<=[.;:])\s+(?=[(A-Z0-9])")
# Used when no source corpus is at hand (a clean clone before `make run`): provisions in the default's register.
FALLBACK_TEXTS = (
    "1. Member States shall lay down the rules on penalties applicable to infringements of this Regulation and "
    "shall take all measures necessary to ensure that they are implemented. 2. The penalties provided for shall be "
    "effective, proportionate and dissuasive. 3. Member States shall notify the Commission of those rules.",
    "Providers of high-risk AI systems shall ensure that their systems technically allow for the automatic "
    "recording of events over the lifetime of the system. Logs shall be kept for a period appropriate to the "
    "intended purpose, of at least six months, unless provided otherwise in Union or national law.",
    "The data subject shall have the right to obtain from the controller confirmation as to whether or not personal "
    "data concerning him or her are being processed. Where that is the case, the data subject shall have access to "
    "the personal data and to information on the purposes of the processing and the recipients.",
    "Each Member State shall ensure that essential and important entities notify, without undue delay, its CSIRT or "
    "competent authority of any incident that has a significant impact on the provision of their services. An early "
    "warning shall be submitted within 24 hours of becoming aware of the significant incident.",
    "The competent authority may impose administrative fines of up to EUR 10 000 000 or, in the case of an "
    "undertaking, up to 2 % of its total worldwide annual turnover of the preceding financial year. Records shall "
    "be kept for five years; the authority shall publish an annual report on its supervisory activities.",
)
FALLBACK_TITLES = ("Penalties", "Record-keeping", "Right of access", "Reporting obligations", "Administrative fines")
_QUESTION_FRAMES = (
    "What are the rules on {q}?",
    "When does {q} apply?",
    "{q}",
    "Which obligations cover {q}?",
)


@dataclass(frozen=True)
class Source:
    """What synthetic chunks are made of: sentences, article headings and chunk lengths (characters)."""

    sentences: tuple[str, ...]
    titles: tuple[str, ...]
    lengths: tuple[int, ...]

    @classmethod
    def from_texts(cls, texts: Sequence[str], titles: Sequence[str | None] = ()) -> Source:
        sentences = tuple(s.strip() for t in texts for s in _SENTENCE.split(" ".join(t.split())) if len(s) > 20)
        heads = tuple(sorted({t for t in titles if t})) or FALLBACK_TITLES
        return cls(sentences, heads, tuple(len(t) for t in texts))

    @classmethod
    def load(cls, corpus: Path = Path("data/fetch/corpus.jsonl")) -> Source:
        """The default corpus' sentences, headings and lengths when it is fetched, else the built-in ones."""
        if corpus.is_file():
            chunks = load_corpus(corpus)
            return cls.from_texts([c.text for c in chunks], [c.title for c in chunks])
        return cls.from_texts(FALLBACK_TEXTS, FALLBACK_TITLES)


def generate_chunks(source: Source, n: int, seed: int = 0) -> Iterator[Chunk]:
    """`n` chunks: articles of 1-8 chunks under a heading drawn from the source's; each chunk's length drawn from
    the source's lengths, filled with its sentences in a seeded order (to the length within half a sentence) and
    opened by a paragraph mark `article.part.` (which also keeps texts distinct)."""
    rng = random.Random(seed)
    made = article = 0
    while made < n:
        article += 1
        title = f"Article {article}: {rng.choice(source.titles)}"
        for part in range(1, min(rng.randint(1, 8), n - made) + 1):
            target = rng.choice(source.lengths)
            words = [f"{article}.{part}."]
            size = len(words[0])
            while True:  # a sentence goes in when it ends nearer the drawn length than stopping before it
                sentence = rng.choice(source.sentences)
                if len(words) > 1 and size + len(sentence) / 2 > target:
                    break
                words.append(sentence)
                size += len(sentence) + 1
            yield Chunk(
                id=f"a{article}-p{part}", text=" ".join(words), title=title, source="synthetic", parent=f"a{article}"
            )
            made += 1


def test_questions(chunks: Sequence[Chunk], n: int, seed: int = 0) -> list[TestQuestion]:
    """`n` questions, each about one chunk of a seeded sample: a few consecutive words of one of its sentences,
    in a question frame."""
    rng = random.Random(seed + 1)
    out = []
    for i, row in enumerate(sorted(rng.sample(range(len(chunks)), min(n, len(chunks))))):
        words = rng.choice(_SENTENCE.split(chunks[row].text)[1:] or [chunks[row].text]).split()
        start = rng.randrange(0, max(1, len(words) - 6))
        phrase = " ".join(words[start : start + rng.randint(4, 8)]).strip(" .;:,")
        question = rng.choice(_QUESTION_FRAMES).format(q=phrase)
        out.append(TestQuestion(id=f"t{i}", question=question, relevant_ids=[chunks[row].id], origin="human"))
    return out


def default_test_size(n_chunks: int) -> int:
    """Test questions for a corpus of n chunks: 1 per 100 chunks, 50 to 1,000 (a labelled set stays small)."""
    return max(50, min(1000, n_chunks // 100))


def write_corpus(out: Path, n: int, seed: int = 0, source: Source | None = None) -> tuple[Path, Path]:
    """corpus.jsonl and test.jsonl of `n` chunks under `out` (the `ragtune bench` folder layout)."""
    chunks = list(generate_chunks(source or Source.load(), n, seed))
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "corpus.jsonl", chunks)
    write_jsonl(out / "test.jsonl", test_questions(chunks, default_test_size(n), seed))
    return out / "corpus.jsonl", out / "test.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    corpus, test = write_corpus(args.out, args.chunks, args.seed)
    print(f"wrote {corpus} ({args.chunks} chunks) and {test}")


if __name__ == "__main__":
    main()
