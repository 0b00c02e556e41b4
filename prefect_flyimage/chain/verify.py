"""Running an image's ``test.sh`` the way docker-pkg does.

``verify_command`` runs with ``verify_args``, where ``{path}`` is the image folder and
``{image}`` the image label. An argument naming a path under ``{path}`` that does not
exist means "no test": the image counts as verified, as in docker-pkg.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import redact
from .config import secrets, setting

#: Environment passed through to the test besides PATH and the proxy: how to reach the daemon.
_PASSTHROUGH = ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "HOME")


@dataclass(frozen=True)
class VerifyOutcome:
    """What a verification did."""

    ok: bool
    skipped: bool = False  #: no test for this image
    returncode: Optional[int] = None
    output: str = ""  #: tail of the combined output, secrets redacted


def proxy_env(config: Mapping[str, Any]) -> dict[str, str]:
    """Proxy variables for builds and tests (docker-pkg's ``buildargs``)."""
    proxy = config.get("http_proxy")
    if not proxy:
        return {}
    return {k: str(proxy) for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def run_verification(folder: Path | str, label: str, config: Mapping[str, Any]) -> VerifyOutcome:
    """Run the verification of image ``label`` defined in ``folder``."""
    folder = str(folder)
    args = list(setting(config, "verify_args") or [])
    for arg in args:
        for part in shlex.split(arg):
            if "{path}" in part and not os.path.exists(part.replace("{path}", folder)):
                return VerifyOutcome(ok=True, skipped=True)
    command = str(setting(config, "verify_command"))
    if shutil.which(command) is None:
        return VerifyOutcome(ok=False, output=f"verify_command {command} not found")
    argv = [command] + [a.replace("{image}", label).replace("{path}", folder) for a in args]
    env = {**proxy_env(config), **{k: os.environ[k] for k in ("PATH", *_PASSTHROUGH) if k in os.environ}}
    timeout = setting(config, "verify_timeout")
    tail: deque[str] = deque(maxlen=40)
    try:
        proc = subprocess.run(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", timeout=timeout, start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        tail.extend(out.splitlines())
        tail.append(f"verification timed out after {timeout}s")
        return VerifyOutcome(ok=False, returncode=None, output=redact("\n".join(tail), secrets(config)))
    tail.extend(proc.stdout.splitlines())
    return VerifyOutcome(ok=proc.returncode == 0, returncode=proc.returncode, output=redact("\n".join(tail), secrets(config)))


__all__ = ["VerifyOutcome", "proxy_env", "run_verification"]
