"""The documentation (README.md, DEVELOPERS.md, docs/*.md) against the repository, by what it does: every
relative link and #anchor resolves; every command in a shell block parses (the flags it uses are in the
script's --help, the recipe scripts pass `bash -n` and know the configuration); every flag of every command
(any file with a __main__ block, subcommands included) is on the page docs/index.md names for that command,
two clicks from the README; every page is in the index; the recipes' environment variables are the ones
docs/recipes.md lists; the README's Quick start is the two commands CI runs; the dependency lists agree;
and docs/testing.md gives the lint commands CI runs."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = (README, ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md")))
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
QUICK_START = ["pip install -r requirements.txt && bash script_demo.sh", "python -m pytest -q"]
RECIPES = ("scripts/common.sh", "script_pretrain.sh", "script_action_classification.sh", "script_action_retrieval.sh")
INDEX = ROOT / "docs" / "index.md"
SKIPPED_FOLDERS = {"tests", "__pycache__", "build", "dist", "venv"}


class Block(NamedTuple):
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    body: str


# ---- markdown ------------------------------------------------------------------------------------------


def split_markdown(page: Path) -> tuple[str, list[Block]]:
    """(the page with fenced blocks blanked out, the fenced blocks)."""
    prose: list[str] = []
    blocks: list[Block] = []
    fence, language, start, body = "", "", 0, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        opening = re.match(r"^\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)", line)
        if not fence and opening:
            fence, language, start, body = opening.group(1), opening.group(2).lower(), number, []
            prose.append("")
        elif fence and re.match(rf"^\s{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
            blocks.append(Block(page, start, language, "\n".join(body)))
            fence = ""
            prose.append("")
        elif fence:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert not fence, f"{page.name}:{start}: fenced block never closed"
    return "\n".join(prose), blocks


def without_code_spans(text: str) -> str:
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    prose, _ = split_markdown(page)
    seen: dict[str, int] = {}
    found = set()
    for match in re.finditer(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", prose, re.M):
        slug = github_slug(match.group(1))
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return frozenset(found)


def links(page: Path) -> list[str]:
    prose = without_code_spans(split_markdown(page)[0])
    inline = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    reference = re.findall(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", prose, re.M)
    return inline + reference


def broken_link(page: Path, target: str) -> str | None:
    """Why ``target`` (a link on ``page``) does not resolve, or None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
        return None
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.exists():
        return f"{target}: no such file"
    if ROOT not in resolved.parents and resolved != ROOT:
        return f"{target}: outside the repository"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"{target}: no heading with anchor #{anchor} in {resolved.relative_to(ROOT)}"
    return None


def shell_blocks() -> list[Block]:
    return [b for page in PAGES for b in split_markdown(page)[1] if b.language in SHELL_LANGUAGES]


# ---- commands ------------------------------------------------------------------------------------------


def logical_lines(block: Block) -> list[str]:
    """Command lines of a shell block: continuations joined, console prompts stripped, output dropped."""
    lines: list[str] = []
    pending = ""
    for raw in block.body.splitlines():
        line = raw
        if block.language == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return [line for line in lines if line.strip()]


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split at &&, ||, ;, |), without leading VAR=value words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    out = []
    for words in commands:
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


@cache
def help_text(script: str, *subcommands: str) -> str:
    """What ``python SCRIPT [SUBCOMMAND...] --help`` prints, run in this process (torch is already imported
    here, so this costs milliseconds instead of a process start each)."""
    path = ROOT / script
    out = io.StringIO()
    argv, sys.argv = sys.argv, [str(path), *subcommands, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_info.value.code in (0, None), f"python {script} --help exited with {exit_info.value.code}"
    return out.getvalue()


def subcommand_path(script: str, words: list[str]) -> tuple[str, ...]:
    """Leading words of ``words`` that name argparse subcommands of ``script`` (none for ours today)."""
    path: list[str] = []
    for word in words:
        choices = re.search(r"^\s*\{([\w,-]+)\}", help_text(script, *path), re.M)
        if not choices or word not in choices.group(1).split(","):
            break
        path.append(word)
    return tuple(path)


def flags(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.match(r"^--?[A-Za-z]", w)]


def in_help(flag: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@cache
def bash_syntax_error(script: str) -> str:
    result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    return result.stderr if result.returncode else ""


@cache
def recipe_configurations(script: str) -> frozenset[str]:
    result = subprocess.run(["bash", str(ROOT / script), "list"], capture_output=True, text=True, cwd=ROOT)
    match = re.search(r"^configurations:(.*)$", result.stdout, re.M)
    return frozenset(match.group(1).split()) if match else frozenset()


def check_python(words: list[str]) -> list[str]:
    """Problems of ``python SCRIPT.py ARGS`` (or a torchrun launch): the script exists, its flags exist."""
    index = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
    if index is None:
        return []
    script, args = words[index], words[index + 1 :]
    if not (ROOT / script).is_file():
        return [f"{script}: no such script"]
    sub = subcommand_path(script, [w for w in args if not w.startswith("-")][:1])
    text = help_text(script, *sub)
    command = " ".join(["python", script, *sub])
    return [f"{command}: {flag} is not in its --help" for flag in flags(args) if not in_help(flag, text)]


def check_bash(words: list[str]) -> list[str]:
    """Problems of ``bash SCRIPT.sh ARGS``: the script exists and parses; a recipe knows the configuration;
    a wrapper's flags exist in the Python script it hands them to."""
    script, args = words[1], words[2:]
    path = ROOT / script
    if not path.is_file():
        return [f"{script}: no such script"]
    if error := bash_syntax_error(script):
        return [f"bash -n {script}: {error.strip()}"]
    source = path.read_text(encoding="utf-8")
    if "dispatch" in source and args:
        known = recipe_configurations(script) | {"all", "list"}
        return [] if args[0] in known else [f"{script}: unknown configuration {args[0]!r}"]
    wrapped = re.search(r"(\S+\.py)\"?\s+\"\$@\"", source)
    if wrapped and args:
        return check_python(["python", wrapped.group(1), *args])
    return []


def command_problems(words: list[str]) -> list[str]:
    program = Path(words[0]).name
    if program in {"python", "python3"} and words[1:2] == ["-m"]:
        return check_python(words) if words[2:3] == ["torch.distributed.run"] else []
    if program in {"python", "python3", "torchrun"}:
        return check_python(words)
    if program == "bash" and len(words) > 1 and words[1].endswith(".sh"):
        return check_bash(words)
    return []


# ---- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    problems = [why for target in links(page) if (why := broken_link(page, target))]
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_every_docs_page_is_in_the_index():
    index = ROOT / "docs" / "index.md"
    listed = {(index.parent / t.partition("#")[0]).resolve() for t in links(index)}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p != index and p.resolve() not in listed]
    assert not missing, f"docs/index.md does not link {', '.join(missing)}"


def test_commands_in_shell_blocks_parse():
    problems = []
    checked = 0
    for block in shell_blocks():
        where = f"{block.page.relative_to(ROOT)}:{block.line}"
        for line in logical_lines(block):
            try:
                commands = simple_commands(line)
            except ValueError as exc:  # unbalanced quotes
                problems.append(f"{where}: {line!r}: {exc}")
                continue
            for words in commands:
                checked += Path(words[0]).name in {"python", "python3", "bash", "torchrun"}
                problems += [f"{where}: {p}" for p in command_problems(words)]
    assert checked >= 20, f"only {checked} commands found: is the block parser broken?"
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_wrong_flag_and_a_wrong_configuration():
    assert check_python(["python", "action_retrieval.py", "--knn-neighbours", "1"]) == []
    assert check_python(["python", "action_retrieval.py", "--knn-neighbors", "1"]) == [
        "python action_retrieval.py: --knn-neighbors is not in its --help"
    ]
    assert check_bash(["bash", "script_pretrain.sh", "ntu60_xview"]) == []
    assert check_bash(["bash", "script_pretrain.sh", "ntu60_xveiw"]) == [
        "script_pretrain.sh: unknown configuration 'ntu60_xveiw'"
    ]
    assert check_bash(["bash", "script_demo.sh", "--smalest"]) == ["python demo.py: --smalest is not in its --help"]
    assert simple_commands("A=1 B=2 bash x.sh y && python z.py --q # note") == [
        ["bash", "x.sh", "y"],
        ["python", "z.py", "--q"],
    ]
    assert github_slug("Pretraining (`main_moco_inter_skeleton.py`)") == "pretraining-main_moco_inter_skeletonpy"
    assert github_slug("NTU RGB+D 60 and 120") == "ntu-rgbd-60-and-120"
    assert broken_link(README, "docs/training.md#checkpoints-and-resume") is None
    assert broken_link(README, "docs/training.md#no-such-heading") == (
        "docs/training.md#no-such-heading: no heading with anchor #no-such-heading in docs/training.md"
    )
    assert broken_link(README, "docs/no-such-page.md") == "docs/no-such-page.md: no such file"


def options_of(help_output: str) -> set[str]:
    """Every option string of an argparse --help (aliases included), without -h/--help."""
    options = {
        flag
        for line in help_output.splitlines()
        if line.startswith("  -")
        for flag in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", re.split(r"\s{2,}", line.strip())[0])
    }
    return options - {"-h", "--help"}


def linked_pages(page: Path) -> list[Path]:
    """The Markdown pages of the repository that ``page`` links to."""
    targets = {
        (page.parent / t.partition("#")[0]).resolve()
        for t in links(page)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and t.partition("#")[0]
    }
    return sorted(p for p in targets if p.suffix == ".md" and p.is_file())


def commands() -> list[str]:
    """Every command of the repository: each file with a ``__main__`` block, relative to the root."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in SKIPPED_FOLDERS for p in parts[:-1]):
            continue
        if re.search(r"^if __name__ == .__main__.:", path.read_text(encoding="utf-8"), re.M):
            found.append(path.relative_to(ROOT).as_posix())
    return found


def index_rows() -> dict[str, Path]:
    """Command -> the page docs/index.md names as documenting its flags (a row's last cell, its code spans
    that name a .py file)."""
    pages: dict[str, Path] = {}
    for line in split_markdown(INDEX)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| [") else []
        target = re.match(r"\[[^\]]*\]\(([^)#]+)", cells[0]) if cells else None
        for name in re.findall(r"`([^`\s]+\.py)`", cells[-1]) if target else ():
            assert name not in pages, f"docs/index.md names two pages for {name}"
            pages[name] = (INDEX.parent / target.group(1)).resolve()
    return pages


def subcommands(script: str) -> list[str]:
    """The argparse subcommands of ``script`` (``{export,import}`` in its --help), or none."""
    choices = re.search(r"^\s*\{([\w,-]+)\}", help_text(script), re.M)
    return choices.group(1).split(",") if choices else []


def test_every_command_has_a_page_two_clicks_from_the_readme():
    rows = index_rows()
    assert len(commands()) >= 15, "is the command discovery broken?"
    assert [c for c in commands() if c not in rows] == [], "commands docs/index.md names no page for"
    assert [c for c in rows if c not in commands()] == [], "docs/index.md names commands that do not exist"
    assert INDEX.resolve() in linked_pages(README)
    assert set(rows.values()) <= set(linked_pages(INDEX)), "a command's page is not linked from the index"


@pytest.mark.parametrize("script", commands())
def test_every_flag_is_on_the_page_of_its_command(script):
    page = index_rows().get(script)
    if page is None:
        pytest.skip("no page: test_every_command_has_a_page_two_clicks_from_the_readme fails")
    text = page.read_text(encoding="utf-8")
    missing = {}
    for sub in [[], *([s] for s in subcommands(script))]:
        options = options_of(help_text(script, *sub))
        missing[" ".join([script, *sub])] = sorted(flag for flag in options if not in_help(flag, text))
    assert {k: v for k, v in missing.items() if v} == {}, f"not documented in {page.relative_to(ROOT)}"


def test_the_flag_check_reads_subcommands_and_the_index():
    assert subcommands("data_gen/ctrgcn_npz.py") == ["export", "import"]
    assert "--keep-padding" in options_of(help_text("data_gen/ctrgcn_npz.py", "export"))
    assert "--keep-padding" not in options_of(help_text("data_gen/ctrgcn_npz.py", "import"))
    assert {"--data-root", "--data_root", "--npz"} <= options_of(help_text("data_gen/ctrgcn_npz.py", "import"))
    assert index_rows()["action_retrieval.py"] == ROOT / "docs" / "evaluation.md"
    assert "main_moco_inter_skeleton.py" in commands() and "tests/test_docs.py" not in commands()
    assert ROOT / "docs" / "troubleshooting.md" in linked_pages(README)
    assert ROOT / "LICENSE" not in linked_pages(README)


def recipe_variables() -> set[str]:
    """The environment variables the recipe scripts read (``${NAME:-default}`` or ``${NAME-default}``)."""
    text = "\n".join((ROOT / script).read_text(encoding="utf-8") for script in RECIPES)
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?-", text))


def test_recipe_environment_variables_are_the_documented_ones():
    text = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    section = re.search(r"^## Environment\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "docs/recipes.md has no '## Environment' section"
    rows = [line.split("|")[1] for line in section.group(1).splitlines() if line.startswith("| `")]
    documented = {name for cell in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}
    read = recipe_variables()
    assert {"GPUS", "RUNS_ROOT", "SEEDS", "EXTRA_ARGS"} <= read, "is the variable pattern broken?"
    assert documented == read, (
        f"read by the recipes but not in docs/recipes.md#environment: "
        f"{sorted(read - documented)}; listed there but read by no recipe: "
        f"{sorted(documented - read)}"
    )


def test_quick_start_is_the_two_commands_ci_runs():
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Quick start\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "README.md has no '## Quick start' section"
    block = re.search(r"^```(?:bash|sh)\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, "the Quick start has no bash block"
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == QUICK_START
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert QUICK_START[1] in ci, ".ci/run does not run the README's test command"
    assert any(re.match(r"^python -m pip install .*-r requirements\.txt$", line) for line in ci)


def test_requirements_and_pyproject_list_the_same_dependencies():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert "-e ." in lines, "requirements.txt must install the repository (-e .)"
    assert sorted(line for line in lines if line != "-e .") == sorted(declared)
    assert project["requires-python"] == ">=3.9"


# ---- docs/testing.md ------------------------------------------------------------------------------------


def test_testing_page_gives_the_lint_commands_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lint = [line.strip() for line in ci.splitlines() if line.strip().startswith("ruff ")]
    pinned = re.search(r"ruff==([\d.]+)", ci)
    assert lint and pinned, ".ci/run no longer runs a pinned ruff: update this test and docs/testing.md"
    page = ROOT / "docs" / "testing.md"
    blocks = [block for block in split_markdown(page)[1] if block.language in SHELL_LANGUAGES]
    commands = {line.split("#", 1)[0].strip() for block in blocks for line in block.body.splitlines()}
    assert [command for command in lint if command not in commands] == []
    assert f"ruff=={pinned.group(1)}" in page.read_text(encoding="utf-8")
