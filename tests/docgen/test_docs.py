"""The documentation stays true to the code: every generated block is current, params.yaml's comments name doc
pages (and headings) that exist, the README's links resolve, and the generators read what they claim to."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from doc_blocks import REPO

from ragtune.docgen.params_ref import DOC_LINK, parse_params, render_params
from ragtune.errors import RagtuneError

LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as mkdocs makes it (Python-Markdown's toc slugify, with markup dropped first)."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown page's headings (outside fenced blocks)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.M)}


def test_every_generated_block_is_current():
    from ragtune.docgen.sections import refresh

    stale = [f"{o.page.relative_to(REPO)}: {o.section}" for o in refresh(REPO, write=False) if o.stale]
    assert not stale, f"stale generated blocks {stale}: run python -m ragtune.readme"


def test_params_yaml_comments_name_doc_pages_and_headings_that_exist():
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    comments = "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    assert 'README, "' not in comments and "in README" not in comments, "a comment names a README section"
    links = DOC_LINK.findall(comments)
    assert len(links) >= 12, links  # every former README reference points at a page
    for link in links:
        page, _, anchor = link.partition("#")
        assert (REPO / page).is_file(), f"params.yaml names {link}: no such page"
        assert not anchor or anchor in anchors(REPO / page), f"params.yaml names {link}: no such heading"


def test_the_readmes_relative_links_resolve():
    readme = REPO / "README.md"
    for target in LINK.findall(readme.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        assert (REPO / path).exists(), f"README.md links {target}: no such file"
        if anchor:
            assert anchor in anchors(REPO / path), f"README.md links {target}: no such heading"


def test_slug_matches_the_anchors_mkdocs_validated():
    assert slug("Weight of a real question (`train.real_weight`)") == "weight-of-a-real-question-trainreal_weight"
    assert slug("`eu-law` (default, offline)") == "eu-law-default-offline"


# --- the generators -------------------------------------------------------------------------------------------

SAMPLE = """# Opening comment.

top:
  # Block comment above a key,
  # on two lines (docs/findings/x.md#a-heading).
  key: 1                # inline | with a pipe
  flag: "a # b"         # a quoted hash is text
  choice: hybrid        # first line of an aligned comment
                        # its second line
  nested:
    deep: [1, 2]
  frames:
    - "What about {q}?"
    - "Does {q} apply?"
"""


def test_params_parser_reads_comments_values_and_lists():
    intro, entries = parse_params(SAMPLE)
    by_path = {".".join(e.path): e for e in entries}
    assert intro == ["Opening comment."]
    assert by_path["top.key"].value == "1"
    assert by_path["top.key"].comments == [
        "Block comment above a key,",
        "on two lines (docs/findings/x.md#a-heading).",
        "inline | with a pipe",
    ]
    assert by_path["top.flag"].value == '"a # b"' and by_path["top.flag"].comments == ["a quoted hash is text"]
    assert by_path["top.choice"].comments == ["first line of an aligned comment", "its second line"]
    assert by_path["top.nested.deep"].value == "[1, 2]"
    assert by_path["top.frames"].default == '["What about {q}?", "Does {q} apply?"]'


def test_params_reference_links_pages_relative_to_itself_and_escapes_pipes(tmp_path):
    page = tmp_path / "docs" / "reference" / "params.md"
    page.parent.mkdir(parents=True)
    block = render_params(SAMPLE, page, tmp_path)
    assert "## top" in block
    assert "[docs/findings/x.md#a-heading](../findings/x.md#a-heading)" in block
    assert "| `key` | `1` | Block comment above a key, on two lines" in block and "inline \\| with a pipe" in block
    assert "| `nested.deep` | `[1, 2]` |" in block


def test_params_parser_refuses_a_line_it_cannot_read():
    with pytest.raises(ValueError, match="cannot read line"):
        parse_params("top:\n  this is not yaml\n")


def test_the_cli_reference_has_every_command_and_option():
    from ragtune.cli import build_parser
    from ragtune.docgen.cli_ref import _subcommands, render_cli

    parser = build_parser()
    block = render_cli(parser)
    for name, (sub, _) in _subcommands(parser).items():
        assert f"## `ragtune {name}`" in block
        for action in sub._actions:
            for option in action.option_strings if action.dest != "help" else ():
                assert f"`{option}" in block or f", {option}" in block, f"ragtune {name} {option}"
    assert "| `action` |  | one of: check, repair, prune |" in block  # ragtune cache's positional choices


def test_the_package_map_has_every_module():
    from ragtune.docgen.code_ref import first_sentence, render_package_map

    block = render_package_map(REPO)
    for module in (REPO / "src" / "ragtune").rglob("*.py"):
        if module.name != "__init__.py":
            assert f"| `{module.stem}` |" in block, module
    assert "**`ragtune.stages`**" in block  # the stage entry points are a package like any other
    assert first_sentence("First one. Second one.\n\nMore.") == "First one."
    assert first_sentence("`ragtune ui`: the UI. More") == "`ragtune ui`: the UI."


def test_the_contracts_block_lists_the_records_fields():
    from ragtune.docgen.code_ref import render_contracts, type_name
    from ragtune.records import Chunk

    block = render_contracts()
    assert "| `relevant_ids` | `list[str]` | yes |" in block
    assert '| `origin` | `"human" \\| "synthetic"` | no (default `"human"`) |' in block
    assert type_name(Chunk.model_fields["title"].annotation) == "str | null"


def test_a_block_goes_into_whichever_file_holds_its_markers(tmp_path, monkeypatch):
    from ragtune.docgen import sections
    from ragtune.docgen.markers import current_block, markers

    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(SAMPLE, encoding="utf-8")
    start, end = markers("params")
    page = tmp_path / "docs" / "reference" / "p.md"
    page.write_text(f"# P\n\n{start}\nold\n{end}\n", encoding="utf-8")
    section = next(s for s in sections.SECTIONS if s.name == "params")
    assert section.render(page, tmp_path).startswith("<!-- generated")
    monkeypatch.setattr(sections, "SECTIONS", (section,))  # the other blocks' markers and sources are not here
    (tmp_path / "README.md").write_text("# R\n", encoding="utf-8")
    assert [(o.page, o.stale) for o in sections.refresh(tmp_path, write=False)] == [(page, True)]
    assert [o.stale for o in sections.refresh(tmp_path, write=True)] == [True]
    assert [o.stale for o in sections.refresh(tmp_path, write=False)] == [False]
    assert "## top" in current_block(page.read_text(encoding="utf-8"), start, end)
    page.write_text("# P\n", encoding="utf-8")
    with pytest.raises(RagtuneError, match="in neither README.md nor docs/"):
        sections.refresh(tmp_path, write=False)
