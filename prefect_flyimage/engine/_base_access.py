"""Why a BuildKit build could not fetch its base image: ask the base's registry ourselves.

BuildKit reports a registry's refusal as whatever its resolver last saw: "403 Forbidden",
or a TLS error when it gave up before falling back to plain HTTP. The classic builder says
"denied". After a BuildKit build fails while resolving or pulling a base, one manifest
request with the credentials the docker CLI would use (the registry client's loopback/
insecure rules) tells a refusal (401/403) apart from a missing or unreachable base.
"""

from __future__ import annotations

__all__ = ["BaseDenial", "denied_base"]

import re
from dataclasses import dataclass
from typing import Iterable, Optional

from ..credentials import docker_config_credentials
from ..errors import AuthenticationError, FlyImageError
from ..names import ImageRef

#: the registry is asked only briefly: the build has failed already
PROBE_TIMEOUT = 5.0

_STEP_TITLE = re.compile(r"^#(\d+) \[[^\]]*\] (.*)$")
_STEP_ERROR = re.compile(r"^#(\d+) ERROR: ")
_BASE_STEP = re.compile(r"^(?:load metadata for|FROM) (\S+)")
_SOLVE_ERROR = re.compile(r"failed to resolve source metadata for (\S+?): ")
_FROM_EXCERPT = re.compile(r"^\s*\d+ \|\s*>>>\s*(FROM\s.*?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class BaseDenial:
    base: str  #: the base image reference as the build named it
    step: str  #: the Dockerfile's FROM line (BuildKit's excerpt), else ``FROM <base>``
    error: AuthenticationError  #: the registry's answer to our request


def _failed_bases(tail: Iterable[str]) -> list[str]:
    """Base references of the failed steps (metadata resolution or a FROM pull)."""
    titles: dict[str, str] = {}
    found: list[str] = []
    for line in (l.strip() for l in tail):
        title = _STEP_TITLE.match(line)
        if title:
            titles[title.group(1)] = title.group(2)
        error = _STEP_ERROR.match(line)
        if error:
            base = _BASE_STEP.match(titles.get(error.group(1), ""))
            if base:
                found.append(base.group(1))
        found += _SOLVE_ERROR.findall(line)
    return list(dict.fromkeys(found))


def denied_base(tail: list[str]) -> Optional[BaseDenial]:
    """The base whose registry refuses us, if the failed build's output names such a base."""
    from ..registry import RegistryClient  # httpx: loaded only on this failure path

    excerpt = next((m.group(1) for m in map(_FROM_EXCERPT.match, tail) if m), None)
    for text in _failed_bases(tail):
        try:
            ref = ImageRef.parse(text)
            credentials = docker_config_credentials(ref.registry)
        except FlyImageError:  # not a reference, or a credential helper that fails: no probe
            continue
        with RegistryClient(ref.registry, credentials, timeout=PROBE_TIMEOUT) as client:
            try:
                client.manifest_digest(ref)
            except AuthenticationError as exc:
                return BaseDenial(text, excerpt or f"FROM {text}", exc)
            except FlyImageError:  # unreachable, or another answer: BuildKit's message stands
                continue
    return None
