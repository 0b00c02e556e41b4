"""The exception tree: everything in errors.py, compatibility bases, Prefect's classes."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import prefect_flyimage
from prefect_flyimage import errors

CATCH_BOTH_WAYS = r"""
import sys
order = sys.argv[1]
if order == "ours-first":
    from prefect_flyimage import errors
    import prefect.utilities.dockerutils as pdu
else:
    import prefect.utilities.dockerutils as pdu
    from prefect_flyimage import errors
caught = []
for exc, theirs in ((errors.BuildTimeout("t"), pdu.BuildError), (errors.PushAuthenticationError("p", "r"), pdu.PushError),
                    (errors.DockerfileNotFoundError("Cannot locate specified Dockerfile: x"), pdu.BuildError)):
    try:
        raise exc
    except theirs:
        caught.append(type(exc).__name__)
print(",".join(caught))
"""


@pytest.mark.parametrize("order", ["ours-first", "prefect-first"])
def test_prefects_except_clauses_catch_ours(order):
    out = subprocess.run([sys.executable, "-c", CATCH_BOTH_WAYS, order], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "BuildTimeout,PushAuthenticationError,DockerfileNotFoundError"


def test_the_core_does_not_import_prefect():
    code = "import sys; import prefect_flyimage.errors, prefect_flyimage.pipeline; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_push_errors_are_os_errors_and_keep_their_message():
    exc = errors.PushError("push to r failed: denied", "r")
    assert isinstance(exc, OSError) and str(exc) == "push to r failed: denied" and exc.registry == "r"
    assert isinstance(errors.PushTimeout("slow", "r"), TimeoutError)
    assert not errors.is_transient(errors.PushAuthenticationError("no", "r"))
    assert errors.is_transient(errors.PushUnavailableError("down", "r"))
    assert not errors.is_transient(errors.PushError("bad manifest", "r"))  # an OSError, but not transient


def test_missing_dockerfile_is_a_context_and_a_build_error(tmp_path):
    from prefect_flyimage.plan import BuildPlan

    with pytest.raises(errors.ContextError, match="Cannot locate specified Dockerfile") as err:
        BuildPlan.from_dockerfile(tmp_path, "127.0.0.1:5000/app", dockerfile="Nope")
    assert isinstance(err.value, errors.BuildError) and isinstance(err.value, ValueError)


def test_every_exception_class_lives_in_errors():
    import importlib
    import pkgutil

    outside = []
    for info in pkgutil.walk_packages(prefect_flyimage.__path__, "prefect_flyimage."):
        if info.name.endswith(("__main__", ".errors")):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                outside.append(f"{module.__name__}.{name}")
    assert outside == []
    assert set(errors.__all__) >= {n for n, o in vars(errors).items() if inspect.isclass(o) and issubclass(o, Exception) and o.__module__ == errors.__name__ and not n.startswith("_")}
