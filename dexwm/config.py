"""The one configuration front door, jsonargparse for every entry point.

`train.py` is Lightning's CLI (jsonargparse underneath); `eval.py`, `plan.py`, `demo.py` and the
`data_prep` commands go through `parse` here; Python callers use `load`. Everywhere: YAML files
(`--config`, later files win) plus dotted overrides (`--probe.steps 100`), `--print_config`, and
required values that fail loudly when missing. Defaults live only where they are declared: the
dataclass or function signature of the thing configured. The resolved config, the git commit and
the command line are written beside every output (`dexwm.io.write_run_record`). `command` is the
whole life of a preparation command: parse, run, one summary line, exit code.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace

from dexwm.io import InputError, write_run_record

Target = type | Callable[..., Any]


def parser(target: Target, description: str | None = None) -> ArgumentParser:
    """An argument parser for a dataclass / class (its constructor) or a function: one flag per
    parameter at the top level (`--fps`, `--probe.steps`), `--config` for YAML files. A function
    with a parameter named `config` takes it as a plain value instead (e.g. `plan.py serve
    --config PLAN.yaml` names the plan config to serve; its own options are flags only)."""
    doc = description or (inspect.getdoc(target) or "").split("\n\n")[0]
    p = ArgumentParser(description=doc)
    if inspect.isclass(target) or "config" not in inspect.signature(target).parameters:
        p.add_argument("--config", action="config", help="YAML config file(s); later ones win")
    if inspect.isclass(target):
        p.add_class_arguments(target, nested_key=None, fail_untyped=True, sub_configs=True)
    else:
        p.add_function_arguments(target, nested_key=None, fail_untyped=True, sub_configs=True)
    return p


def _build(p: ArgumentParser, target: Target, ns: Namespace):
    """A parsed namespace -> an instance of `target` (a class) or its keyword arguments."""
    init = p.instantiate(ns)
    own = not inspect.isclass(target) and "config" in inspect.signature(target).parameters
    kwargs = {
        k: v for k, v in vars(init).items() if (own or k != "config") and not k.startswith("__")
    }
    return target(**kwargs) if inspect.isclass(target) else kwargs


def default_record(values) -> str | None:
    """Where a run's record goes: its `out_dir` or `out` folder (a file's folder for a file)."""
    get = values.get if isinstance(values, dict) else lambda k: getattr(values, k, None)
    out = get("out_dir") or get("out")
    if out is None:
        return None
    out = Path(out)
    return str(out.parent if out.suffix else out)


def parse(
    target: Target | dict[str, Target],
    argv: list[str] | None = None,
    description: str | None = None,
    record: Callable[[Any], str | None] = default_record,
):
    """The command line -> an instance of `target` (a class) or its keyword arguments (a
    function); with a dict of targets, subcommands: -> (name, instance or kwargs). The resolved
    config is written to the folder `record(values)` names (default: `out_dir` / `out`).
    `--some-flag` is read as `--some_flag`."""
    argv = [_underscores(a) for a in (sys.argv[1:] if argv is None else argv)]
    if isinstance(target, dict):
        top = ArgumentParser(description=description)
        sub = top.add_subcommands()
        subs = {name: parser(t) for name, t in target.items()}
        for name, p in subs.items():
            sub.add_subcommand(name, p, help=(inspect.getdoc(target[name]) or "").split("\n")[0])
        cfg = top.parse_args(argv)
        name = cfg.subcommand
        values = _build(subs[name], target[name], cfg[name])
        folder = record(values)
        if folder:
            write_run_record(folder, top.dump(cfg))
        return name, values
    p = parser(target, description)
    cfg = p.parse_args(argv)
    values = _build(p, target, cfg)
    folder = record(values)
    if folder:
        write_run_record(folder, p.dump(cfg))
    return values


def _underscores(arg: str) -> str:
    if not arg.startswith("--") or len(arg) == 2:
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def load(target: Target, *configs: str | Path | dict, section: str | None = None, **overrides):
    """What `parse` gives for `--config c1 --config c2 ...` plus `overrides` (nested dicts or
    dotted keys), for Python callers; a config may also be a dict. `section`: read only that key
    of each YAML file (e.g. the `model:` part of a training config)."""
    p = parser(target)
    cfg = p.get_defaults()
    for c in configs:
        part = c if isinstance(c, dict) else yaml.safe_load(Path(c).read_text()) or {}
        if section is not None:
            part = part.get(section) or {}
        cfg = p.parse_object(part, cfg_base=cfg, _skip_validation=True)
    if overrides:
        cfg = p.parse_object(overrides, cfg_base=cfg, _skip_validation=True)
    missing = [a.dest for a in p._actions if a.required and cfg.get(a.dest) is None]
    if missing:
        raise ValueError(f"{getattr(target, '__name__', target)}: missing required {missing}")
    p.validate(cfg, skip_unset=False)
    return _build(p, target, cfg)


def command(
    target: Target,
    run: Callable[[Any], Any],
    summary: Callable[[Any, Any], tuple[str, bool]],
    argv: list[str] | None = None,
    record: Callable[[Any], str | None] = default_record,
) -> int:
    """Parse the command line for `target` (see `parse`), `run(values)`, print the one-line
    `summary(values, result)` -> (line, wrote anything); returns the exit code for `sys.exit`:

    0  something was written;
    1  the run finished but wrote nothing (every input skipped: the summary says why);
    2  bad input: a path that does not exist or holds nothing usable (`dexwm.io.InputError`), or
       settings the configured class rejects (ValueError while building it); one line on stderr,
       no traceback. (jsonargparse's own usage errors exit 2 as well.)
    Anything else is a bug or an unexpected failure and keeps its traceback."""
    try:
        try:
            values = parse(target, argv, record=record)
        except ValueError as e:  # a dataclass's __post_init__ rejecting its settings
            raise InputError(f"invalid settings: {e}") from e
        result = run(values)
    except InputError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
        return 2
    line, wrote = summary(values, result)
    print(_one_line(line), flush=True)
    return 0 if wrote else 1


def _one_line(x: object) -> str:
    return " ".join(str(x).split())
