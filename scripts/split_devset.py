"""Split a labelled query set into real training questions and test questions by id prefix, for
`ragtune bench` (a DIR with corpus.jsonl, test.jsonl and train_questions.jsonl). Not a pipeline stage.

    python scripts/split_devset.py ../shared/devsets/acord data/transfer/work/splits/acord --train train- valid-
    python scripts/split_devset.py ../shared/devsets/or_sharc data/transfer/work/splits/or_sharc --train dev-

Questions whose id starts with a --train prefix become train_questions.jsonl, the rest test.jsonl;
corpus.jsonl is linked. The split is the dataset's own (its authors' train/test), not drawn here.
"""

import argparse
from pathlib import Path

from ragtune.records import load_corpus, load_test, load_train_questions, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", nargs="+", required=True, help="id prefixes of the training questions")
    args = ap.parse_args()
    chunks = load_corpus(args.source / "corpus.jsonl")
    questions = load_test(args.source / "test.jsonl", corpus_ids=[c.id for c in chunks])
    train = [q for q in questions if q.id.startswith(tuple(args.train))]
    test = [q for q in questions if not q.id.startswith(tuple(args.train))]
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "test.jsonl", test)
    write_jsonl(args.out / "train_questions.jsonl", train)
    load_train_questions(args.out / "train_questions.jsonl", test)  # the leakage rule holds
    link = args.out / "corpus.jsonl"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to((args.source / "corpus.jsonl").resolve())
    print(f"{args.out}: {len(train)} training questions, {len(test)} test questions")


if __name__ == "__main__":
    main()
