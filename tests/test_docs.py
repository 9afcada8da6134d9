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
