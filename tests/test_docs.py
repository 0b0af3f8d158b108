"""The docs cannot drift from the code: every page (README.md and docs/*.md) is read, each
`gdrq-run ...` command in its code blocks and each `key=value` override it shows must compose
with Hydra (as `gdrq-run --cfg job` would), and each path it names must exist. (`make docs`
builds the site with `mkdocs build --strict`, which fails on a broken link or a page missing
from the navigation.)"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gdrq_bench.config import CONFIG_DIR, quote_numeric_choice
from gdrq_bench.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a path the pages name: under one of the repository's folders, or a test file by its name
PATH = re.compile(r"^(?:gdrq_bench|tests|bench|conf|docs|\.ci)/[\w./-]*\w$")
TEST_FILE = re.compile(r"^test_\w+\.py$")
# an override: a key of the composed config (dotted) or a group choice (group/option=value)
OVERRIDE = re.compile(r"^\+?[a-z_][\w]*(?:[./][\w]+)*=\S+$")
FIRST_KEYS = None  # filled from the composed config: the keys an override may start with
# not a value of the config: a placeholder the text explains (seed=N, trainer.fp.epochs=E)
PLACEHOLDER = re.compile(r"=(?:[A-Z]|<[^>]*>|\.\.\.)$")
# overrides a page shows wrong on purpose (the error a typo gives)
WRONG_ON_PURPOSE = {"method.kw=3"}
# a command line: gdrq-run first, after environment assignments or a launcher's arguments
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:torchrun .*--no-python )?gdrq-run(?: |$)")
TASKS = ([], ["task=detection"], ["task=segmentation"])


def _code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def _code_lines(text: str) -> list[str]:
    """The lines of the page's code blocks (indented by 4 or fenced), continuations joined."""
    lines, fenced, joined = text.splitlines(), False, []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1] + " " + line.strip()
            else:
                joined.append(line.strip())
    return joined


def gdrq_run_commands(text: str) -> list[list[str]]:
    """The overrides of each `gdrq-run` command in the code blocks (after `gdrq-run`, up to
    a `#` comment; `-m`, `--cfg job` and `...` left out)."""
    commands = []
    for line in _code_lines(text):
        if not COMMAND.match(line):
            continue
        words = shlex.split(line.split(" #")[0].split("gdrq-run", 1)[1], posix=True)
        flags = {"-m", "--multirun", "--cfg", "job", "--help", "..."}
        commands.append([word for word in words if word not in flags and "$" not in word])
    return commands


def _first_value(override: str) -> str:
    """A grid override (a,b,c) as its first value: a command line composes one run at a time."""
    key, _, value = override.partition("=")
    if "," in value and not value.startswith(("[", "{", "'", '"')):
        value = value.split(",")[0]
    return f"{key}={value}"


@cache
def _config_keys() -> frozenset[str]:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return frozenset(compose("config"))


def _composes(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        compose(
            "config",
            overrides=[quote_numeric_choice(_first_value(o)) for o in overrides],
            return_hydra_config=True,
        )


def shown_overrides(text: str) -> list[str]:
    """Each inline code span made only of `key=value` overrides whose keys start with a
    config key or group: what a reader would type (an error message quoting a bad value is
    not one)."""
    keys = _config_keys() | {"hydra"}
    found = []
    for span in _code_spans(text):
        words = span.split()
        roots = [re.split(r"[./]", word.lstrip("+").partition("=")[0])[0] for word in words]
        if all(OVERRIDE.match(word) and root in keys for word, root in zip(words, roots)):
            found += [w for w in words if not PLACEHOLDER.search(w) and w not in WRONG_ON_PURPOSE]
    return found


def _composes_in_some_task(overrides: list[str]) -> None:
    """An override of one task's keys (task.head, dataset.format) composes in that task."""
    for task in TASKS[:-1]:
        try:
            return _composes([*task, *overrides])
        except Exception:  # Hydra's errors vary; the last task's is raised
            continue
    _composes([*TASKS[-1], *overrides])


def _distinct_key_batches(overrides: list[str]) -> list[list[str]]:
    """The overrides, in order, in as few batches as hold each key once."""
    batches: list[dict[str, str]] = []
    for override in overrides:
        key = override.lstrip("+").partition("=")[0]
        batch = next((batch for batch in batches if key not in batch), None)
        if batch is None:
            batches.append(batch := {})
        batch[key] = override
    return [list(batch.values()) for batch in batches]


def _composition_failures(overrides: list[str]) -> list[str]:
    """'overrides: error' if they do not compose in any task, else nothing."""
    if any(o.startswith("hydra.searchpath=") for o in overrides):
        return []  # a plugin's own config directory: not this repository's
    try:
        _composes_in_some_task([o for o in overrides if not PLACEHOLDER.search(o)])
    except Exception as error:  # Hydra's errors vary: collect them all, then fail once
        return [f"{' '.join(overrides)}: {str(error).splitlines()[0]}"]
    return []


register_configs()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_and_override_a_page_shows_composes(page: Path) -> None:
    """Each command composes; the overrides shown alone compose in batches of distinct keys
    (a compose costs ~0.2 s), each alone where its batch does not."""
    text = page.read_text()
    failures = [f for command in gdrq_run_commands(text) for f in _composition_failures(command)]
    for batch in _distinct_key_batches(shown_overrides(text)):
        if _composition_failures(batch):
            failures += [f for override in batch for f in _composition_failures([override])]
    assert not failures, f"{page.name}:\n" + "\n".join(failures)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_path_a_page_names_exists(page: Path) -> None:
    named = set()
    for span in _code_spans(page.read_text()):
        for word in span.split():
            word = word.rstrip(".,:;")
            if PATH.match(word) and "<" not in word and "*" not in word:
                named.add(ROOT / word)
            elif TEST_FILE.match(word):
                named.add(ROOT / "tests" / word)
    missing = sorted(str(path.relative_to(ROOT)) for path in named if not path.exists())
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_checks_catch_a_bad_option_and_a_missing_path(tmp_path: Path) -> None:
    """The checks above fail on what they exist for: a page with an option no group has, a
    key no config has, and a path that is not in the repository."""
    with pytest.raises(Exception, match="method"):
        _composes(["method=gdrqq"])
    with pytest.raises(Exception, match="calibrat"):
        _composes(["trainer.calibrate.rounding_mode=nearest"])
    assert shown_overrides("run `trainer.schedule=ptq` or `seed=N`") == ["trainer.schedule=ptq"]
    assert gdrq_run_commands("    gdrq-run -m method=gdrq,lsq bits=4  # a grid\n") == [
        ["method=gdrq,lsq", "bits=4"]
    ]
    assert not PATH.match("results/<task>.csv") and PATH.match("tests/test_ptq.py")
    batch = ["bits=4", "method=gdrqq", "task.detector=ssdlite"]
    assert _distinct_key_batches([*batch, "bits=8"]) == [batch, ["bits=8"]]
    assert _composition_failures(batch) and not _composition_failures(["bits=4"])


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (mkdocs' and GitHub's slugs agree on these) and its
    explicit <a id> ones."""
    text = page.read_text()
    headings = re.findall(r"^#+ (.*)$", text, flags=re.MULTILINE)
    slugs = {re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in headings}
    return slugs | set(re.findall(r'<a id="([^"]+)">', text))


def test_the_readmes_links_reach_their_pages_and_sections() -> None:
    """mkdocs checks the links between the pages; README.md is not one of them."""
    broken = []
    for target in re.findall(r"\]\(([^)#]+\.md)(?:#([^)]+))?\)", (ROOT / "README.md").read_text()):
        path, anchor = ROOT / target[0], target[1]
        if not path.exists() or (anchor and anchor not in _anchors(path)):
            broken.append("#".join(filter(None, target)))
    assert not broken, f"README.md links to missing pages or sections: {broken}"
