"""One vocabulary for our command lines: old option spellings as warned aliases, errors named by the typed flag."""
# Every CLI of the project (train, sim, sim convex, train calibrate) builds its parsers from `VocabParser`:
#  - `add_argument(..., old=("--B",))` also accepts the old spelling for one release; using it prints ONE line
#    "warning: --B is deprecated; use --batch-size" (through `notice`, which the trainer's parser limits to launch
#    rank 0), and --help shows only the new spelling;
#  - every option records the option string the user typed for its dest (`typed_options(namespace)`), so that
#    `name_flags` can rewrite a configuration error ("batch_size must be ...") into the words the user typed
#    ("--B must be ...").
# Dependency-free (argparse and re only): sim's CLI and the trainer's both import it.
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["VocabParser", "VocabHelpFormatter", "group_by_topic", "typed_options", "name_flags"]

_TYPED = "_typed_options"  # namespace attribute: {dest: option string as typed}
_WARNED = "_warned_options"


class VocabHelpFormatter(argparse.HelpFormatter):
    """Help that leaves out the old spellings of an option (they still work, with a warning)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        old = getattr(action, "old_spellings", ())
        if not old:
            return super()._format_action_invocation(action)
        saved = action.option_strings
        action.option_strings = [s for s in saved if s not in old]
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = saved


def _recording(base: type[argparse.Action]) -> type[argparse.Action]:
    """A subclass of an argparse action class that records the typed option string and warns on an old one."""

    class Recording(base):  # type: ignore[valid-type, misc]
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            if option_string is not None and self.dest is not argparse.SUPPRESS:
                typed = namespace.__dict__.setdefault(_TYPED, {})
                typed[self.dest] = option_string
                old = getattr(self, "old_spellings", ())
                warned = namespace.__dict__.setdefault(_WARNED, set())
                if option_string in old and option_string not in warned:
                    warned.add(option_string)
                    note = getattr(parser, "notice", None)
                    line = f"warning: {option_string} is deprecated; use {self.option_strings[0]}"
                    if callable(note):
                        note(line)
                    else:
                        print(line, file=sys.stderr, flush=True)
            super().__call__(parser, namespace, values, option_string)

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


_ACTIONS = {None: argparse._StoreAction, "store": argparse._StoreAction,
            "store_const": argparse._StoreConstAction, "store_true": argparse._StoreTrueAction,
            "store_false": argparse._StoreFalseAction, "append": argparse._AppendAction,
            "append_const": argparse._AppendConstAction, "count": argparse._CountAction,
            "extend": argparse._ExtendAction}


class VocabParser(argparse.ArgumentParser):
    """An ArgumentParser whose options record how they were typed and may carry old spellings (`old=`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", VocabHelpFormatter)
        super().__init__(*args, **kwargs)
        for name, cls in _ACTIONS.items():
            self.register("action", name, _recording(cls))

    def add_argument(self, *args: Any, old: Iterable[str] = (), **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        old = tuple(old)
        action = super().add_argument(*args, *old, **kwargs)
        action.old_spellings = old  # type: ignore[attr-defined]
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        _allow_old(group)
        return group

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        group = super().add_mutually_exclusive_group(**kwargs)
        _allow_old(group)
        return group

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def typed_message(self, message: str) -> str:
        """An argparse error "argument --new/--old: ..." naming only the spelling that was typed."""
        m = re.match(r"argument ((?:-[\w-]+/)+-[\w-]+): ", message)
        if not m:
            return message
        argv = getattr(self, "_argv", [])
        spellings = m.group(1).split("/")
        typed = [s for s in spellings if any(a == s or a.startswith(s + "=") for a in argv)]
        return f"argument {(typed or spellings)[-1]}: " + message[m.end():]

    def error(self, message: str) -> Any:
        super().error(self.typed_message(message))

    def notice(self, line: str) -> None:
        """Print one line for humans on stderr (the trainer's parser prints on launch rank 0 only)."""
        print(line, file=sys.stderr, flush=True)


def _allow_old(group: Any) -> None:
    """Let an argument group's add_argument take `old=` like VocabParser's."""
    add = group.add_argument

    def add_argument(*args: Any, old: Iterable[str] = (), **kwargs: Any) -> argparse.Action:
        old = tuple(old)
        action = add(*args, *old, **kwargs)
        action.old_spellings = old
        return action

    group.add_argument = add_argument
    if hasattr(group, "add_mutually_exclusive_group"):
        make = group.add_mutually_exclusive_group

        def add_mutually_exclusive_group(**kwargs: Any) -> Any:
            sub = make(**kwargs)
            _allow_old(sub)
            return sub

        group.add_mutually_exclusive_group = add_mutually_exclusive_group


def group_by_topic(parser: argparse.ArgumentParser, topics: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Move a parser's options into argument groups, one per (title, flags) topic, so that --help lists them by
    topic; an option in no topic stays under argparse's "options"."""
    topic = {flag: title for title, flags in topics for flag in flags}
    groups = {title: parser.add_argument_group(title) for title, _ in topics}
    default = parser._optionals._group_actions
    for action in list(default):
        title = next((topic[s] for s in action.option_strings if s in topic), None)
        if title is not None:
            default.remove(action)
            groups[title]._group_actions.append(action)


def typed_options(ns: argparse.Namespace) -> dict[str, str]:
    """{dest: the option string the user typed for it} of a namespace parsed by a VocabParser."""
    return dict(getattr(ns, _TYPED, {}))


_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")


def name_flags(message: str, typed: Mapping[str, str], aliases: Mapping[str, str] | None = None) -> str:
    """`message` with each field name whose value came from the command line replaced by the typed flag.

    `typed` maps dests to typed option strings (`typed_options`); `aliases` maps other words of the messages
    (a dataclass field such as `delay_global_s`, or `straggler`) to their dest. Quoted values are left alone,
    and so is a name that is part of a longer word or flag (`lr` in `lr_cap` or `--lr`).
    """
    words = dict(typed.items())
    for word, dest in (aliases or {}).items():
        if dest in typed:
            words.setdefault(word, typed[dest])
    if not words:
        return message
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(words, key=len, reverse=True)))
                         + r")(?![\w-])")
    parts = _QUOTED.split(message)
    return "".join(p if i % 2 else pattern.sub(lambda m: words[m.group(1)], p) for i, p in enumerate(parts))
