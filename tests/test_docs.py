"""Every command the docs tell a user to type still works: the ```bash blocks of README.md and
docs/*.md are read at test time (a new or changed command is covered without editing this
file), and each line that runs `python scripts/<name>.py`, `python -m segmenter...`, `make
<target>` or a `segmenter...` console command is checked.

- A script's command is composed with Hydra as the script composes it (its entry config, its
  overrides; in a sweep, each swept value at least once) and the result resolved, which is
  what `--cfg job` does without running anything: an unknown key, group option or
  interpolation fails here.
- Commands that run on CPU in seconds without ../shared/data and without a server are also
  run, shrunk: training with `debug=fdr` on a small built-in corpus (or small generated files
  for the ones the command names), outputs under pytest's tmp_path; predict with a shipped
  model on a small generated input; `python -m segmenter.pretrained`.
- `python -m` modules must exist, `make` targets must be in the Makefile, console commands in
  pyproject.toml.

Placeholders a reader fills in (`<run>`, `...`, `<same overrides>`) are replaced by a dummy
value or dropped; shell variables set in the same block (`V=...`, `for seed in 42 7`) are
expanded with their first value."""

from __future__ import annotations

import functools
import importlib.util
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from segmenter.cli.app import run_task
from segmenter.pretrained import MODEL_UNITS
from tests.helpers import ROOT, TEXT, TINY_DATA, compose_config, entry_config, write, write_songs

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = "placeholder"


# ----------------------------------------------------------------------------- reading the docs


@dataclass(frozen=True)
class DocCommand:
    where: str  # docs/x.md:12
    kind: str  # script | module | make | console
    name: str  # train (scripts/train.py), segmenter.pretrained, lint, segmenter-train
    args: tuple[str, ...]  # what follows the name, placeholders filled in

    def __str__(self) -> str:
        return f"{self.where}: {self.name} {' '.join(self.args)}"


def _strip_comment(line: str) -> str:
    """``line`` without a shell comment (a # at a word's start, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _bash_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of the ```bash blocks of ``path``: continuations joined,
    comments dropped, shell variables of the block (assignments, the first value of a for
    loop) expanded."""
    out: list[tuple[int, str]] = []
    block, start, pending = False, 0, ""
    variables: dict[str, str] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.strip().startswith("```"):
            block, variables = raw.strip() == "```bash" and not block, {}
            continue
        if not block:
            continue
        line = _strip_comment(raw).rstrip()
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        loop = re.match(r"for (\w+) in (\S+).*; do$", line)
        assignment = re.match(r"^(\w+)=(.*)$", line)
        if loop:
            variables[loop.group(1)] = loop.group(2)
        elif assignment:
            variables[assignment.group(1)] = shlex.split(assignment.group(2))[0]
        elif line:
            for name, value in variables.items():  # "$V" and $seed: as the shell would (not ${model.net.dim})
                line = line.replace(f'"${name}"', shlex.quote(value))
                line = re.sub(rf"\${name}\b", value, line)
            out.append((start, line))
    return out


def _fill(token: str) -> str | None:
    """A token with a reader's placeholders filled in; None: drop it (a placeholder alone)."""
    if "=" not in token:
        return None if "<" in token or ">" in token or token == "..." else token
    key, value = token.split("=", 1)
    value = re.sub(r"<[^<>]*>", PLACEHOLDER, value)
    if value == "..." or "<" in value or ">" in value:
        value = PLACEHOLDER
    return f"{key}={value}"


def _console_commands() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    return set(project.get("scripts", {}))


def doc_commands(paths: list[Path] = DOCS) -> list[DocCommand]:
    consoles = _console_commands()
    found = []
    for path in paths:
        for n, line in _bash_lines(path):
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{n}"
            for part in line.split("|"):  # `cat a.txt | python scripts/predict.py ... > b.txt`
                try:
                    words = shlex.split(part)
                except ValueError:
                    continue
                if ">" in words:
                    words = words[: words.index(">")]
                if not words:
                    continue
                if words[0] == "python" and len(words) > 1 and words[1].startswith("scripts/"):
                    kind, name, rest = "script", Path(words[1]).stem, words[2:]
                elif words[0] == "python" and words[1:2] == ["-m"] and words[2].startswith("segmenter"):
                    kind, name, rest = "module", words[2], words[3:]
                elif words[0] == "make" and len(words) > 1:
                    kind, name, rest = "make", words[1], words[2:]
                elif words[0].startswith("segmenter") and (words[0] in consoles or "/" not in words[0]):
                    kind, name, rest = "console", words[0], words[1:]
                else:
                    continue
                args = tuple(a for a in map(_fill, rest) if a is not None)
                found.append(DocCommand(where, kind, name, args))
                if kind == "console":  # `segmenter-train x=1` or `segmenter train x=1`: composed as the script
                    script = name.removeprefix("segmenter-").replace("-", "_")
                    if name == "segmenter" and args:
                        script, args = args[0].replace("-", "_"), args[1:]
                    if (ROOT / "scripts" / f"{script}.py").is_file():
                        found.append(DocCommand(where, "script", script, args))
    return found


COMMANDS = doc_commands()
SCRIPTS = [c for c in COMMANDS if c.kind == "script"]


def _unique(commands: list[DocCommand]) -> list[DocCommand]:
    """Each command once (README.md and docs/ repeat some), at its first place."""
    seen, out = set(), []
    for c in commands:
        if (c.name, c.args) not in seen:
            seen.add((c.name, c.args))
            out.append(c)
    return out


def test_the_docs_commands_are_found():
    names = {c.name for c in SCRIPTS}
    assert {"train", "predict", "evaluate", "serve"} <= names, names
    assert len(SCRIPTS) >= 40, [str(c) for c in SCRIPTS]


# ----------------------------------------------------------------------------- composing


def variants(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists a run or a sweep composes: in a sweep, each swept value at least
    once (the i-th variant takes the i-th value of every sweep), not the whole product."""
    if not multirun:
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            choices.append([f"{o.get_key_element()}={v}" for v in values])
        else:
            choices.append([o.input_line])
    width = max(len(c) for c in choices) if choices else 1
    return [[c[i % len(c)] for c in choices] for i in range(width)]


# Hydra's flags that take a value (the value is not an override).
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-name", "-cn", "--config-dir", "-cd"}


def overrides_of(command: DocCommand) -> tuple[list[str], bool]:
    """The command's overrides and whether it is a sweep (-m)."""
    args, skip = [], False
    for a in command.args:
        if skip:
            skip = False
        elif a in FLAGS_WITH_VALUE:
            skip = True
        elif not a.startswith("-"):
            args.append(a)
    return args, "-m" in command.args or "--multirun" in command.args


def unresolvable(node, prefix: str = "") -> set[str]:
    """The keys under ``node`` whose interpolations do not resolve (the hydra node left out)."""
    bad = set()
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for k in keys:
        full = f"{prefix}{k}"
        if full == "hydra":
            continue
        try:
            child = node[k]
        except Exception:
            bad.add(full)
            continue
        if isinstance(child, (DictConfig, ListConfig)):
            bad |= unresolvable(child, f"{full}.")
    return bad


def compose(command: DocCommand, tmp_path: Path, extra: list[str] = ()) -> list[DictConfig]:
    """The configs ``command`` runs with, one per sweep variant (its own run folder, under
    tmp_path). Raises what Hydra raises for an override that does not compose."""
    args, multirun = overrides_of(command)
    out = []
    for overrides in variants(args, multirun):
        cfg = compose_config(entry_config(command.name), [*overrides, *extra], hydra_config=True)
        with open_dict(cfg):
            if "paths" in cfg:
                cfg.paths.output_dir = str(tmp_path / "run")
        out.append(cfg)
    return out


@functools.cache
def unresolvable_by_default(script: str) -> frozenset[str]:
    """Keys the entry config itself leaves unresolved (e.g. model.net.attention in the
    benchmark, which builds its attention modules from rows.* instead): not the docs' fault."""
    try:
        return frozenset(unresolvable(compose_config(entry_config(script), [], hydra_config=True)))
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("command", _unique(SCRIPTS), ids=str)
def test_each_documented_script_command_composes(command, tmp_path):
    assert (ROOT / "scripts" / f"{command.name}.py").is_file(), f"{command}: no scripts/{command.name}.py"
    try:
        for cfg in compose(command, tmp_path):  # composes: every key, group option and value type accepted
            bad = unresolvable(cfg) - unresolvable_by_default(command.name)
            assert not bad, f"{command}: interpolations that do not resolve: {sorted(bad)}"
            _, multirun = overrides_of(command)
            OmegaConf.select(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir", throw_on_missing=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind != "script"], ids=str)
def test_each_documented_module_make_and_console_command_exists(command):
    if command.kind == "module":
        assert importlib.util.find_spec(command.name) is not None, f"{command}: no module {command.name}"
    elif command.kind == "make":
        targets = re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M)
        assert command.name in targets, f"{command}: no target {command.name} in the Makefile ({targets})"
    else:
        assert command.name in _console_commands(), f"{command}: not a [project.scripts] command in pyproject.toml"


# ----------------------------------------------------------------------------- running, shrunk

# Corpora that need neither ../shared/data nor a download; JsonlCorpus reads the file the
# command names, generated here.
LOCAL_CORPORA = ("BuiltinCorpus", "JsonlCorpus")


def may_train(command: DocCommand) -> bool:
    """Not a sweep (-m), --cfg or --help, not a resume or a run into a folder of the reader's."""
    return command.name == "train" and not any(
        a.startswith(("-", "hydra.", "ckpt_path=", "hparams_search=")) for a in command.args
    )


def runnable_training(cfg: DictConfig) -> bool:
    """Trains on CPU in seconds once shrunk: local data, the hashed encoder, one CPU process."""
    corpus = str(cfg.data.corpus.get("_target_", "")).rsplit(".", 1)[-1]
    encoder = str(cfg.encoder._target_).rsplit(".", 1)[-1]
    trainer = cfg.trainer
    return (
        corpus in LOCAL_CORPORA
        and encoder == "HashedNgramEncoder"  # MiniLM encodes every unit first: minutes on CPU
        and trainer.accelerator in ("auto", "cpu")
        and trainer.get("strategy", "auto") == "auto"
        and trainer.devices == 1
    )


def runnable_prediction(command: DocCommand) -> bool:
    args = dict(a.split("=", 1) for a in command.args if "=" in a)
    return command.name == "predict" and "pretrained" in args and "ckpt_path" not in args and args.get("input") != "-"


def make_inputs(command: DocCommand, cwd: Path) -> None:
    """The files a command names, small and generated, under ``cwd`` (where it runs)."""
    args = dict(a.split("=", 1) for a in command.args if "=" in a)
    # units as the command gives them, else as the shipped model was trained (lyrics: lines)
    lines = args.get("units", MODEL_UNITS.get(args.get("pretrained", ""), "sentences")) == "lines"
    # A song's worth of lines (a chorus that recurs), or prose for units=sentences.
    text = "\n".join(f"{'we sing it all night long' if i % 4 == 3 else f'verse line number {i}'}" for i in range(16))
    text = text if lines else TEXT
    for arg in command.args:
        key, _, value = arg.partition("=")
        if key == "data.corpus.path" and value.endswith(".jsonl"):
            write_songs(cwd / value)
        elif key == "input" and value.endswith("/"):
            write(cwd / value / "a.txt", text)
        elif key == "input" and value.endswith(".txt"):
            write(cwd / value, text)


RUNNABLE = [c for c in SCRIPTS if may_train(c) or runnable_prediction(c)]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # the built-in corpus is built once for every run here


@pytest.mark.parametrize("command", _unique(RUNNABLE), ids=str)
def test_documented_commands_that_run_on_cpu_run_shrunk(command, tmp_path, monkeypatch, shared_cache):
    from segmenter.inference.predict import run as predict
    from segmenter.training.train import train

    monkeypatch.chdir(tmp_path)
    make_inputs(command, tmp_path)
    try:
        if command.name == "train":
            (cfg,) = compose(command, tmp_path)
            if not runnable_training(cfg):
                pytest.skip(f"{command}: parsed only (needs ../shared/data, a GPU, MiniLM or a run folder)")
            shrink = ["debug=fdr", "logger=none", "callbacks.lr_monitor=null"]
            if cfg.data.corpus._target_.endswith("BuiltinCorpus"):
                shrink += TINY_DATA
            (cfg,) = compose(command, tmp_path, extra=shrink)
            with open_dict(cfg):
                cfg.paths.log_dir, cfg.paths.cache_dir = str(tmp_path), str(shared_cache)
            run_task(train, cfg)
            assert (tmp_path / "run" / "metrics.json").is_file()
        else:
            (cfg,) = compose(command, tmp_path)
            run_task(predict, cfg)
            out = Path(cfg.output) if cfg.output else tmp_path / "outputs" / "predictions" / cfg.pretrained
            assert list(out.rglob("predictions.jsonl")), f"{command}: nothing written under {out}"
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind == "module" and not c.args], ids=str)
def test_documented_modules_without_arguments_run(command, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [command.name])
    try:
        runpy.run_module(command.name, run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), f"{command}: exit status {e.code}"
    assert capsys.readouterr().out.strip(), f"{command}: printed nothing"


def test_shrinking_keeps_what_the_command_chose(tmp_path):
    """The sweep expansion gives every swept value, and placeholders become plain values."""
    got = variants(["attention=self,localized,boundary_aware", "trainer.max_epochs=2"], multirun=True)
    assert [v[0] for v in got] == ["attention=self", "attention=localized", "attention=boundary_aware"]
    assert (
        _fill("ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt")
        == "ckpt_path=outputs/runs/placeholder/checkpoints/last.ckpt"
    )
    assert _fill("ckpt_path=...") == "ckpt_path=placeholder" and _fill("<same") is None


@pytest.mark.parametrize(
    "args", [("attention=no_such_attention",), ("model.net.no_such_key=1",), ("--cfg", "job", "trainer.max_epochs")]
)
def test_a_command_that_no_longer_composes_fails(args, tmp_path):
    command = DocCommand("docs/x.md:1", "script", "train", args)
    try:
        with pytest.raises(Exception):  # noqa: B017 -- whatever Hydra raises for it
            compose(command, tmp_path)
    finally:
        GlobalHydra.instance().clear()


def test_commands_are_read_as_a_shell_would(tmp_path):
    doc = write(
        tmp_path / "doc.md",
        "text\n```bash\n"
        "V='model.net.similarity={_target_: x.Y, dim: ${model.net.dim}}'\n"
        "for seed in 42 7; do\n"
        '  python scripts/train.py seed=$seed "$V" \\\n'
        "    hydra.run.dir=outputs/s$seed   # a comment\n"
        "done\n"
        "cat a.txt | python scripts/predict.py ckpt_path=... input=- > b.txt\n"
        "make lint\n"
        "```\n"
        "```\npython scripts/not_bash.py\n```\n",
    )
    got = [(c.where, c.kind, c.name, c.args) for c in doc_commands([doc])]
    assert got == [
        (
            "doc.md:5",
            "script",
            "train",
            ("seed=42", "model.net.similarity={_target_: x.Y, dim: ${model.net.dim}}", "hydra.run.dir=outputs/s42"),
        ),
        ("doc.md:8", "script", "predict", ("ckpt_path=placeholder", "input=-")),
        ("doc.md:9", "make", "lint", ()),
    ]
