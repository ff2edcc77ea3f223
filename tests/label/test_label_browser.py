"""`ragtune label` in a real headless browser: Debian's Chromium (`make browser`) driven by Playwright.

On a tiny real pipeline: label three questions (one typed, one from the --questions file with a chunk found by
searching the corpus, one "none"), have a test question refused, reload, edit one, kill the server in the
middle of a write, restart, and check the files."""

import json
import time
from pathlib import Path

import pytest
from browser_support import launched_chromium
from label_support import TEST_QUESTIONS, LabelServer, build_pipeline

from ragtune.records import TestQuestion, load_train_questions

QUEUE = [
    "Which entities report incidents to a CSIRT?",
    "When is a national cybersecurity strategy adopted",  # test question t-2, other punctuation
    "Is there a rule on lunch breaks?",
    "What must importers check before placing products on the market?",
]
TYPED = "How fast must a personal data breach be notified?"
AFTER_KILL = "Who gives an opinion on sustainability reporting?"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    with launched_chromium() as chromium:
        yield chromium


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def candidate_ids(page) -> list[str]:
    return page.locator("#candidates .chunk").evaluate_all("cards => cards.map(c => c.dataset.id)")


def save_and_wait(page, button: str = "#save") -> str:
    page.click(button)
    page.wait_for_selector("#message.saved")
    return page.inner_text("#message")


def test_label_three_reload_edit_kill_mid_write_restart(browser, tmp_path):
    root = build_pipeline(tmp_path / "pipeline")
    (root / "questions.txt").write_text("\n".join(QUEUE) + "\n", encoding="utf-8")
    out, none_file = root / "corpus/train_questions.jsonl", root / "corpus/train_questions.none.jsonl"
    tests = [TestQuestion(**q) for q in TEST_QUESTIONS]
    marker = tmp_path / "slow-writes"
    server = LabelServer(root, "-k", "2", "--questions", "questions.txt", slow_marker=marker)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(server.url)
        page.wait_for_selector("#counts:has-text('0 labelled')")

        # 1. A typed question: the pooled candidates show title and text; mark the breach article.
        page.fill("#question", TYPED)
        page.click("#show")
        card = page.locator('#candidates .chunk[data-id="gdpr-1"]')
        assert "Controllers shall notify a personal data breach" in card.inner_text()
        assert "GDPR Art. 1" in card.inner_text()
        card.locator("input").check()
        assert "Saved" in save_and_wait(page)
        first = rows(out)
        assert first == [
            {"id": first[0]["id"], "question": TYPED, "relevant_ids": ["gdpr-1"], "answer": None, "origin": "human"}
        ]

        # 2. The next question of the file, with a chunk none of the arms found, added by searching the corpus.
        page.click("#next")
        page.wait_for_selector(f"#judging-question:has-text('{QUEUE[0]}')")
        assert "csrd-11" not in candidate_ids(page)
        page.locator('#candidates .chunk[data-id="nis2-6"] input').check()
        page.click("#find-wrap summary")
        page.fill("#find-text", "statutory auditors")
        page.click("#find")
        page.locator('#found .chunk[data-id="csrd-11"] input').check()
        assert page.inner_text("#save") == "Save: 2 relevant"
        save_and_wait(page)
        assert rows(out)[1]["question"] == QUEUE[0] and rows(out)[1]["relevant_ids"] == ["nis2-6", "csrd-11"]

        # The file's next question is a test question: refused on sight, and a save sent anyway is refused too.
        page.click("#next")
        page.wait_for_selector("#message.error")
        assert "Refused:" in page.inner_text("#message") and "test question 't-2'" in page.inner_text("#message")
        assert page.is_disabled("#save") and page.is_disabled("#none")
        before = out.read_bytes()
        forced = page.request.post(server.url + "api/judge", data={"question": QUEUE[1], "relevant_ids": ["nis2-7"]})
        assert forced.status == 409 and "either for training or for testing" in forced.json()["error"]
        assert out.read_bytes() == before

        # 3. Skip it; the next one has no relevant chunk: "none", kept in the sidecar, not a training row.
        page.click("#skip")
        page.wait_for_selector(f"#judging-question:has-text('{QUEUE[2]}')")
        save_and_wait(page, "#none")
        assert [r["question"] for r in rows(none_file)] == [QUEUE[2]] and len(rows(out)) == 2
        assert page.inner_text("#counts") == "2 labelled · 1 with no relevant chunk"

        # Reload: the page reads it all back, with the recommendation on the two labelled questions.
        page.reload()
        page.wait_for_selector("#counts:has-text('2 labelled')")
        assert page.locator("#judgements li").count() == 3
        assert page.inner_text("#statement").startswith("On 2 labelled questions")
        assert page.locator("#scores tr[data-arm]").count() == 5

        # Edit the first: its mark is shown again; add a second chunk and save.
        page.locator("#judgements li", has_text=TYPED).locator("button").click()
        page.wait_for_selector(f"#judging-question:has-text('{TYPED}')")
        assert page.is_checked('#judging .chunk[data-id="gdpr-1"] input')
        other = next(cid for cid in candidate_ids(page) if cid != "gdpr-1")
        page.locator(f'#candidates .chunk[data-id="{other}"] input').check()
        save_and_wait(page)
        edited = rows(out)
        assert edited[0] == {**first[0], "relevant_ids": ["gdpr-1", other]} and len(edited) == 2

        # Kill the server in the middle of a write: the temporary file is written, the rename not yet done.
        marker.touch()
        page.fill("#question", AFTER_KILL)
        page.click("#show")
        page.locator('#candidates .chunk[data-id="csrd-11"] input').check()
        page.click("#save")
        waited = Path(f"{marker}.waiting")
        deadline = time.monotonic() + 60
        while not waited.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waited.exists(), "the server never reached the write"
        temp = list(out.parent.glob(f".{out.name}.*.tmp"))
        assert len(temp) == 1 and AFTER_KILL in temp[0].read_text(encoding="utf-8")
        server.kill()
        page.wait_for_selector("#message.error")
        assert page.inner_text("#message").startswith("Not saved: the server does not answer")
        assert rows(out) == edited  # the old file, whole: every line parses
        load_train_questions(out, tests)
    finally:
        server.stop()

    # Restart: the session resumes from the files; the killed write's temporary file is cleaned up.
    marker.unlink()
    server = LabelServer(root, "-k", "2", "--questions", "questions.txt")
    try:
        page.goto(server.url)
        page.wait_for_selector("#counts:has-text('2 labelled · 1 with no relevant chunk')")
        assert not list(out.parent.glob(".*.tmp"))
        # Questions 1 and 3 of the file are judged and not asked again; the skipped test question is next.
        assert "question 2 of 4 (2 judged, 0 skipped)" in page.inner_text("#queue-info")
        page.fill("#question", AFTER_KILL)
        page.click("#show")
        page.locator('#candidates .chunk[data-id="csrd-11"] input').check()
        save_and_wait(page)
        code, printed = server.interrupt()
        assert code == 0 and printed[-1] == "stopped; every judgement shown as saved is on disk"
        assert any("corpus/train_questions.jsonl (2 labelled)" in line for line in printed)
    finally:
        server.stop()
    page.close()

    saved = load_train_questions(out, tests, [f"{c}" for c in _corpus_ids(root)])
    assert [(q.question, q.relevant_ids) for q in saved] == [
        (TYPED, ["gdpr-1", other]),
        (QUEUE[0], ["nis2-6", "csrd-11"]),
        (AFTER_KILL, ["csrd-11"]),
    ]
    assert [r["question"] for r in rows(none_file)] == [QUEUE[2]]
    # Nothing but the local server was asked for anything: no CDN, no fonts, no telemetry.
    assert requests and all(url.startswith("http://127.0.0.1:") for url in requests), requests


def _corpus_ids(root: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (root / "data/fetch/corpus.jsonl").read_text().splitlines()]
