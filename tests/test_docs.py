"""The documentation stays true: the configuration reference is the generated one and names
every key; README stays a short front door whose links resolve and whose commands run."""
import re
import subprocess

import pytest

from parallel_ms.__main__ import build_parser
from parallel_ms.config_reference import keys, markdown
from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_configuration_reference_is_generated_and_complete():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == markdown() + "\n", ("docs/configuration.md is stale: regenerate it with "
                                       "'python -m parallel_ms config --reference > "
                                       "docs/configuration.md'")
    cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in page.splitlines()
             if line.startswith("| `")]
    rows = {c[0].strip(" `"): c[-1] for c in cells}
    assert set(rows) == set(keys()) and all(text.strip() for text in rows.values()), \
        [k for k in keys() if not rows.get(k, "").strip()]


def test_readme_is_a_short_front_door_with_working_links():
    assert len(README.encode()) < 8 * 1024
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / target).exists(), target
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)


#: a page of docs/ as code, docstrings and pages cite it (``docs/<page>.md``, with ``§4.3`` or
#: ``#anchor`` after it); not ``../shared/docs/<page>.md``, a note outside the repository.
DOC_REFERENCE = re.compile(r"(?<![\w/.-])docs/([\w.-]+?\.md)\b")
#: a relative Markdown link to a page: ``](page.md)``, ``](../README.md#anchor)``
PAGE_LINK = re.compile(r"\]\(([^)#:\s]+\.md)(?:#([^)\s]*))?\)")


def doc_citers(root):
    """The files whose references to docs/ must resolve."""
    return sorted({*root.glob("parallel_ms/**/*.py"), *root.glob("benchmarks/*.py"),
                   *root.glob("tests/*.py"), root / "README.md", *root.glob("docs/*.md")})


def anchors(page):
    """GitHub's heading anchors of a Markdown page (lower case, punctuation dropped, spaces
    to hyphens, repeated headings numbered)."""
    seen, out = {}, set()
    for heading in re.findall(r"^#+\s+(.*?)\s*$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def dangling_doc_references(root):
    """(file, reference) for every ``docs/<page>.md`` cited in code, tests, README and docs that is
    not a file of the repository, and every relative page link of README and docs/*.md whose
    page or heading anchor does not exist."""
    bad = []
    for path in doc_citers(root):
        text = path.read_text()
        bad += [(path.relative_to(root), f"docs/{name}") for name in DOC_REFERENCE.findall(text)
                if not (root / "docs" / name).is_file()]
        if path.suffix == ".md":
            for target, anchor in PAGE_LINK.findall(text):
                page = path.parent / target
                if not page.is_file() or (anchor and anchor not in anchors(page)):
                    bad.append((path.relative_to(root), f"{target}#{anchor}" if anchor else target))
    return bad


def test_every_cited_doc_and_page_link_resolves_in_the_repository():
    assert len(doc_citers(ROOT)) > 50 and (ROOT / "docs" / "second-order.md").is_file()
    assert not dangling_doc_references(ROOT)


@pytest.mark.parametrize("command", sorted(set(re.findall(r"`python -m parallel_ms (\w+)",
                                                          README))))
def test_each_readme_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, "--help"])
    assert stop.value.code == 0 and f"usage: parallel_ms {command}" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["install.sh", "build-container.sh"])
def test_readme_scripts_answer_help(script):
    out = subprocess.run([ROOT / "scripts" / script, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
