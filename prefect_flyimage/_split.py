"""Split a plan into a dependency part and a code tail that can be appended without a build.

A Dockerfile splits after its last ``RUN``: everything up to and including it (plus the
context files those steps ``COPY``) is the **dependency part**, a plan of its own whose
content tag depends on its own inputs only; the steps after it are the **code tail**,
which only adds context files and sets metadata, so it can be written as one layer and a
new config straight in the registry (:mod:`._append`).

Tail steps we apply ourselves: ``COPY`` of context files (``--chown`` with numeric ids),
``WORKDIR``, ``ENV``, ``LABEL``, ``CMD``, ``ENTRYPOINT``, ``USER``, ``EXPOSE``. Anything
else after the last ``RUN`` keeps the plan whole (it builds as before), with the reason
in :attr:`Split.reason`: ``ADD`` (URLs, archive extraction), ``COPY --from``/``--link``/
``--chmod``, ``--chown`` by name (needs the image's ``/etc/passwd``), variables (``$``),
``FROM`` (a later stage), ``ARG``, ``SHELL``, ``ONBUILD``, ``VOLUME``, ``HEALTHCHECK``,
``STOPSIGNAL``; a build target, heredocs; dependency steps that copy (or bind-mount)
the whole context (nothing to gain). BuildKit plans (secrets, ``RUN --mount``) split: the
dependency part keeps them (its context includes the files ``RUN`` bind-mounts), and an
``Image`` spec's code layers after its last install or command split the same way.
"""

from __future__ import annotations

__all__ = ["Copy", "Split", "Step", "context_folder", "split_plan", "APPEND_ENV"]

import contextlib
import fnmatch
import json
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from .context import ContextEntry, entries_digest
from .dockerfile import instructions
from .plan import BuildPlan

#: ``0``/``false``/``no`` turns the registry append off (everything builds as before).
APPEND_ENV = "PREFECT_FLYIMAGE_APPEND"

_METADATA = {"WORKDIR", "ENV", "LABEL", "CMD", "ENTRYPOINT", "USER", "EXPOSE"}
_NUMERIC_CHOWN = re.compile(r"^\d+(:\d+)?$")


@dataclass(frozen=True)
class Copy:
    """One tail ``COPY``: sources (context paths or patterns), destination, numeric owner."""

    sources: tuple[str, ...]
    dest: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Step:
    """One tail instruction: its keyword, original text (for history) and parsed value."""

    keyword: str
    text: str
    copy: Optional[Copy] = None
    value: Any = None


@dataclass(frozen=True)
class Split:
    """The outcome of :func:`split_plan`: either a dependency plan and tail, or a reason."""

    plan: BuildPlan
    dependency: Optional[BuildPlan] = None
    steps: tuple[Step, ...] = ()
    reason: Optional[str] = None  #: why the plan does not split (``None`` when it does)
    #: the dependency part's final stage sets CMD itself (then ENTRYPOINT keeps it)
    head_sets_cmd: bool = False

    @property
    def splits(self) -> bool:
        return self.dependency is not None


def append_enabled() -> bool:
    """False when ``$PREFECT_FLYIMAGE_APPEND`` turns the registry append off."""
    return os.environ.get(APPEND_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _json_or_words(rest: str) -> Optional[list[str]]:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None
    return None


def _flags(rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name.lower()] = value
        rest = rest.lstrip()
    return flags, rest


def _parse_copy(rest: str) -> tuple[Optional[Copy], Optional[str]]:
    flags, rest = _flags(rest)
    for name in flags:
        if name == "from":
            return None, "COPY --from copies from another image or stage"
        if name != "chown":
            return None, f"COPY --{name} is not supported by the registry append"
    uid = gid = 0
    if "chown" in flags:
        owner = flags["chown"]
        if not _NUMERIC_CHOWN.match(owner):
            return None, f"COPY --chown={owner} names a user or group (needs the image's /etc/passwd); use numeric ids"
        uid_text, _, gid_text = owner.partition(":")
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else uid
    words = _json_or_words(rest)
    if words is None:
        words = rest.split()
    if len(words) < 2:
        return None, f"COPY {rest!r} needs a source and a destination"
    return Copy(tuple(words[:-1]), words[-1], uid, gid), None


def _parse_kv(rest: str, keyword: str) -> list[tuple[str, str]]:
    """``ENV``/``LABEL`` pairs: ``a=b c="d e"`` or the legacy ``ENV a b c``."""
    words = shlex.split(rest, posix=True)
    if not words:
        raise ValueError(f"{keyword} needs a value")
    if "=" not in words[0]:
        if keyword != "ENV":
            raise ValueError(f"{keyword} {rest!r} must be key=value")
        name, _, value = rest.partition(" ")
        return [(name, value.strip())]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise ValueError(f"{keyword} {rest!r} must be key=value pairs")
        pairs.append((key, value))
    return pairs


def _command(rest: str) -> list[str] | str:
    words = _json_or_words(rest)
    return words if words is not None else rest  # a str: shell form


def _tail_step(keyword: str, rest: str) -> tuple[Optional[Step], Optional[str]]:
    text = f"{keyword} {rest}"
    if "$" in rest:
        return None, f"{keyword} uses a variable ($): only a build substitutes it"
    if keyword == "COPY":
        copy, why = _parse_copy(rest)
        return (Step(keyword, text, copy=copy) if copy else None), why
    if keyword == "ADD":
        return None, "ADD may fetch URLs or extract archives; use COPY for plain files"
    if keyword not in _METADATA:
        return None, f"{keyword} after the last RUN is not a code step"
    try:
        if keyword in ("ENV", "LABEL"):
            return Step(keyword, text, value=_parse_kv(rest, keyword)), None
        if keyword in ("CMD", "ENTRYPOINT"):
            return Step(keyword, text, value=_command(rest)), None
        if keyword == "EXPOSE":
            ports = [p if "/" in p else f"{p}/tcp" for p in rest.split()]
            return Step(keyword, text, value=ports), None
        if not rest:
            return None, f"{keyword} needs a value"
        return Step(keyword, text, value=rest), None
    except ValueError as exc:
        return None, str(exc)


def _head_text(lines: list[tuple[str, str]]) -> str:
    return "".join(f"{k} {r}\n" for k, r in lines)


def _matches(path: str, pattern: str) -> bool:
    """Docker's ``filepath.Match`` per path component (``*`` stops at ``/``)."""
    parts, pats = path.split("/"), pattern.split("/")
    if len(parts) < len(pats):
        return False
    return all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats))


def _normal_source(source: str) -> str:
    """A context-relative source with ``./``, leading ``/`` and trailing ``/`` removed ('' = all)."""
    norm = os.path.normpath("/" + source).lstrip("/")
    return "" if norm in (".", "") else norm


def selected_entries(entries: list[ContextEntry], sources: tuple[str, ...]) -> list[ContextEntry]:
    """The context entries that ``COPY <sources>`` reads (each source and what is under it)."""
    out: dict[str, ContextEntry] = {}
    for source in sources:
        norm = _normal_source(source)
        for e in entries:
            if norm == "" or e.path == norm or e.path.startswith(norm + "/") or _matches(e.path, norm) or any(
                _matches("/".join(e.path.split("/")[:k]), norm) for k in range(1, e.path.count("/") + 1)
            ):
                out[e.path] = e
    return [out[p] for p in sorted(out)]


class SubsetContext:
    """The part of a plan's context that its dependency steps ``COPY`` (the generated-context
    interface a :class:`BuildPlan` takes: ``entries``, ``digest``, ``total_size``, ``stage``)."""

    def __init__(self, base: Any, sources: tuple[str, ...], root: Any) -> None:
        self.base, self.sources, self.root_path = base, sources, root
        self.staged_at = None
        self._entries: Optional[list[ContextEntry]] = None

    def entries(self) -> list[ContextEntry]:
        if self._entries is None:
            self._entries = selected_entries(self.base.entries(), self.sources)
        return self._entries

    def digest(self) -> str:
        return entries_digest(self.entries())

    def total_size(self) -> int:
        return sum(e.size for e in self.entries())

    def stage(self, folder: Any) -> None:
        if not hasattr(self.base, "calls"):  # a plain folder: copy from it
            self._copy_from(Path(self.root_path), folder)
            return
        with tempfile.TemporaryDirectory(prefix="flyimage-dep-") as tmp:  # an Image spec's: stage it first
            self.base.stage(Path(tmp))
            self._copy_from(Path(tmp), folder)

    def _copy_from(self, root: Path, folder: Any) -> None:
        import shutil

        for e in self.entries():
            target = Path(folder) / e.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if e.kind == "dir":
                target.mkdir(exist_ok=True)
                os.chmod(target, e.mode)
            elif e.kind == "symlink":
                os.symlink(os.readlink(root / e.path), target)
            else:
                shutil.copy2(root / e.path, target)


def _bind_sources(rest: str) -> list[str]:
    """The context paths a ``RUN``'s ``--mount=type=bind`` flags read (``""``: all of it)."""
    flags: list[str] = []
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        flags.append(word)
        rest = rest.lstrip()
    out = []
    for word in flags:
        name, _, value = word[2:].partition("=")
        if name.lower() != "mount":
            continue
        fields = dict(f.partition("=")[::2] for f in value.split(","))
        if fields.get("type", "bind") == "bind" and "from" not in fields:
            out.append(fields.get("source", fields.get("src", "")))
    return out


@contextlib.contextmanager
def context_folder(plan: BuildPlan) -> Iterator[Path]:
    """A folder holding the files of ``plan``'s context at their context paths: the
    plan's folder, or its generated context (an ``Image`` spec's) staged for the call."""
    generated = plan.generated_context
    if generated is None:
        yield Path(plan.context)
        return
    staged = getattr(generated, "staged_at", None)
    if staged is not None and Path(staged).is_dir():
        yield Path(staged)
        return
    with tempfile.TemporaryDirectory(prefix="flyimage-append-") as tmp:
        generated.stage(Path(tmp))
        yield Path(tmp)


def split_plan(plan: BuildPlan) -> Split:
    """Split ``plan`` after its last ``RUN`` (see the module docstring); never raises for
    a Dockerfile it cannot split: the reason is returned instead."""
    if plan.target is not None:
        return Split(plan, reason=f"the build stops at target {plan.target!r}")
    if "<<" in plan.dockerfile_text:
        return Split(plan, reason="the Dockerfile uses heredocs (<<)")
    lines = list(instructions(plan.dockerfile_text))
    if not lines or lines[0][0] not in ("FROM", "ARG"):
        return Split(plan, reason="the Dockerfile does not start with FROM")
    stage_start = max(i for i, (k, _) in enumerate(lines) if k == "FROM") if any(k == "FROM" for k, _ in lines) else 0
    last_run = max((i for i, (k, _) in enumerate(lines) if k == "RUN"), default=-1)
    if last_run < stage_start:
        # Nothing slow to keep: FROM plus files builds in seconds, and stays a plain build.
        return Split(plan, reason="the final stage has no RUN (no dependency step to keep)")
    head, tail = lines[: last_run + 1], lines[last_run + 1:]
    if not tail:
        return Split(plan, reason="nothing follows the last RUN")
    steps: list[Step] = []
    for keyword, rest in tail:
        step, why = _tail_step(keyword, rest)
        if step is None:
            return Split(plan, reason=why)
        steps.append(step)
    if not any(s.copy for s in steps):
        return Split(plan, reason="the steps after the last RUN copy no files")
    # The files the dependency steps read: their COPY/ADD sources (local ones) and the
    # context paths their RUN steps bind-mount (BuildKit; an Image spec's installs).
    sources: list[str] = []
    for keyword, rest in head:
        if keyword in ("COPY", "ADD"):
            flags, body = _flags(rest)
            if "from" in flags:
                continue
            words = _json_or_words(body) or body.split()
            sources += words[:-1]
        elif keyword == "RUN":
            sources += _bind_sources(rest)
    if any(_normal_source(s) == "" for s in sources):
        return Split(plan, reason="the dependency steps copy the whole context (nothing to gain)")
    head_sets_cmd = any(k == "CMD" for k, _ in lines[stage_start: last_run + 1])
    # The plan's build settings carry over, and so do its resolved bases and their pins (the
    # head has every FROM of the plan); its tags, target, Dockerfile name and append do not.
    dependency = plan.with_(
        dockerfile_text=_head_text(head),
        tag=None,
        target=None,
        extra_tags=(),
        append=True,
        dockerfile_name=None,
        generated_context=SubsetContext(plan.build_context, tuple(sources), plan.context),
    )
    return Split(plan, dependency, tuple(steps), head_sets_cmd=head_sets_cmd)

