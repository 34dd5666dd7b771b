"""The scripts' entry point: Hydra's main with one error policy, and SEGMENTER_ROOT.

A user's mistake -- bad data (``ReaderError``), a bad checkpoint (``CheckpointError``), bad
input text, a bad or missing config value (``ConfigError``, checked before the script
starts: segmenter.cli.config), a file that is not there -- ends the script with one line on
standard error (also in the run's log file), naming what is wrong, and exit status 2.
``HYDRA_FULL_ERROR=1`` adds the traceback. Anything else is a bug: Hydra prints its
traceback, exit status 1. Hydra's own refusals of the command line (an unknown key or
option, bad override syntax) happen before the script starts; they are one line as well
(``refusal``: an unknown key names the nearest valid key), exit status 2. A key added with
``+`` must have a place in the config (``segmenter.cli.config.check_added_keys``): Hydra
would add any, and nothing would read a misspelled one.

The configs are segmenter/conf (inside the package). ``SEGMENTER_ROOT`` (``paths.root_dir``:
where outputs/ and ../shared/data are found) is set here unless already set: to the checkout
the package is imported from (the repository root), else to the current folder.

Usage in scripts/<name>.py::

    @segmenter.cli.main(config_name="train")
    def main(cfg): ...
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, HydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from segmenter.cli.config import config_dir, dotted_keys, unknown_key, validate
from segmenter.pretrained import MODELS

log = logging.getLogger(__name__)

USER_ERROR_STATUS = 2
# Errors about files the user named (a bug rarely raises these with a user's path in them).
FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


# The user's mistakes, by class name: matching them imports nothing (torch stays unloaded
# when a config value is refused).
USER_ERRORS = {
    "segmenter.data.formats.ReaderError",
    "segmenter.inference.checkpoint.CheckpointError",
    "segmenter.cli.config.ConfigError",
    "segmenter.inference.predict.InputError",
    "segmenter.inference.predict.PredictionError",
    "omegaconf.errors.MissingMandatoryValue",
}


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, FILE_ERRORS):
        return True
    return any(f"{c.__module__}.{c.__qualname__}" in USER_ERRORS for c in type(error).__mro__)


def user_error(error: BaseException) -> BaseException | None:
    """The user's mistake behind ``error`` (itself, or what Hydra wrapped while instantiating
    a config: a constructor refusing a value), None for a bug."""
    seen = error
    while seen is not None:
        if _is_user_error(seen):
            return seen
        seen = seen.__cause__
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, (ValueError, TypeError)):
        return error  # a constructor refused a config value: Hydra's message names the target and the value
    return None


def one_line(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a value"
        return f"missing value for {key} (??? in the config): give it on the command line as {key}=...; --help lists the settings"
    text = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    if type(error).__name__ in ("InstantiationException",) and error.__cause__ is not None:
        text = f"{text} ({type(error.__cause__).__name__})"
    elif isinstance(error, FILE_ERRORS):
        text = f"{type(error).__name__}: {text}"
    return text


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Validate ``cfg``, run ``task``; a user's mistake -> one logged line and exit status 2
    (in a multirun it is re-raised after logging: the sweep records the job as failed)."""
    try:
        validate(cfg, overrides=HydraConfig.get().overrides.task if HydraConfig.initialized() else ())
        return task(cfg)
    except Exception as e:
        mistake = user_error(e)
        if mistake is None:
            log.error("failed with an unexpected error (a bug; traceback follows): %s: %s", type(e).__name__, e)
            _traceback_to_log_files(e)  # Hydra prints it on stderr; the run's log file gets it too
            raise
        full = os.environ.get("HYDRA_FULL_ERROR") == "1"
        log.error("%s", one_line(mistake), exc_info=e if full else None)
        if _multirun():
            raise
        logging.shutdown()  # flush the run's log file
        sys.exit(USER_ERROR_STATUS)


def _traceback_to_log_files(error: BaseException) -> None:
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "traceback:", (), (type(error), error, error.__traceback__)
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def root_dir() -> Path:
    """Where outputs/ go and ../shared/data is looked for when SEGMENTER_ROOT is not set: the
    checkout holding the package (a pyproject.toml beside segmenter/; the scripts, an editable
    install), else the current folder (a segmenter installed from a wheel)."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def _set_full_error(value: str | None) -> None:
    if value is None:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
        os.environ["HYDRA_FULL_ERROR"] = value


def refusal(error: Exception, args: Sequence[str], *, script: str) -> str:
    """One line for Hydra's refusal of the command line ``args`` (composing the config
    failed): an unknown key names the nearest valid key; a config group the script does not
    take (``model=topic`` to predict) says what to give instead."""
    cause = error.__cause__
    key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if isinstance(error, ConfigCompositionException) and key and isinstance(parent, DictConfig):
        prefix = key.rpartition(".")[0]
        given = next((a for a in args if a.split("=", 1)[0].lstrip("+~") == key), key)
        return f"{given}: {unknown_key(key, dotted_keys(parent, prefix + '.' if prefix else ''))}"
    found = re.match(r"Could not override '([^']+)'\. No match in the defaults list", str(error))
    if found:
        group = found.group(1)
        given = next((a for a in args if a.split("=", 1)[0] == group), group)
        hint = ""
        if group == "model":  # the scripts that take no model group take pretrained= instead
            value = given.split("=", 1)[-1]
            hint = f"; for a shipped model give pretrained={value if value in MODELS else '<' + '|'.join(sorted(MODELS)) + '>'}"
        return f"{given}: {script} takes no config group {group} (a group of scripts/train.py){hint}; --help lists the settings"
    text = str(error).split("Config search path:")[0]  # Hydra's search path says nothing to the user
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(*, config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``hydra.main`` (version_base 1.3, the package's configs) with the error policy; sets
    SEGMENTER_ROOT (``root_dir()``) unless it is set."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        started = False
        os.environ.setdefault("SEGMENTER_ROOT", str(root_dir()))  # read by conf/paths/default.yaml

        full_error = os.environ.get("HYDRA_FULL_ERROR")  # the user's own setting

        @functools.wraps(task)  # Hydra names the job after the script through __wrapped__
        def guarded(cfg: DictConfig) -> Any:
            nonlocal started
            started = True
            _set_full_error(full_error)  # from here on Hydra reports as the user asked
            return run_task(task, cfg)

        if task.__module__ != "__main__":
            # A command defined in the package (segmenter.cli.commands): Hydra would name every
            # job after that module; name it after the command (train, predict, ...) instead,
            # as when it was defined in scripts/<command>.py.
            del guarded.__wrapped__
            guarded.__module__ = task.__name__

        hydra_main = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(guarded)

        @functools.wraps(task)
        def entry() -> Any:
            # Hydra words a refused command line in several lines and, for a misspelled key,
            # advises `+key=value`, which adds a key nothing reads. With HYDRA_FULL_ERROR=1 (its
            # documented switch) it raises instead, and the refusal is worded here: one line.
            os.environ["HYDRA_FULL_ERROR"] = "1"
            try:
                return hydra_main()
            except SystemExit as e:
                if e.code == 1 and not started:  # Hydra refused the command line and said why
                    raise SystemExit(USER_ERROR_STATUS) from None
                raise
            except Exception as e:
                if started or full_error == "1":
                    raise
                # Before any job started here: composing the config failed, or (a sweep whose
                # jobs run in other processes) a job's error came back; that job logged it.
                mistake = user_error(e)
                if mistake is not None:
                    line = one_line(mistake)
                elif isinstance(e, HydraException):
                    line = refusal(e, sys.argv[1:], script=Path(sys.argv[0]).name)
                else:
                    raise  # a bug: its traceback, exit status 1
                sys.stderr.write(line + "\n")
                raise SystemExit(USER_ERROR_STATUS) from None
            finally:
                _set_full_error(full_error)

        return entry

    return decorate
