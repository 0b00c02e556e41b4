"""Unit tests of the Prefect task helpers and the artifact rendering (no Docker, no server)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from prefect.states import Completed, Failed

from prefect_flyimage.artifacts import artifact_key, build_result_markdown, result_status
from prefect_flyimage.errors import (
    AuthenticationError,
    BuildError,
    BuildTimeout,
    ContextError,
    DockerUnavailable,
    FlyImageError,
    InvalidReferenceError,
    PushAuthenticationError,
    PushError,
    PushTimeout,
    PushUnavailableError,
    RegistryError,
    RegistryUnavailable,
    SpecError,
)
from prefect_flyimage.plan import BuildPlan, BuildResult
from prefect_flyimage.tasks import (
    ImageCachePolicy,
    ImageTarget,
    RunLoggerStream,
    _env_number,
    build_image_task,
    configure_retries,
    ensure_image_task,
    is_transient,
    login_task,
    push_image_task,
    retry_delays,
    retry_on_transient,
)

pytestmark = pytest.mark.prefect_compat  # also run on the oldest supported Prefect (scripts/test.sh)

ARTIFACT_KEY = re.compile(r"^[a-z0-9-]+$")


# ---- retry classification ----------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        RegistryUnavailable("registry 127.0.0.1:5999 is unreachable: connection refused", "127.0.0.1:5999"),
        PushUnavailableError("registry down", "r"),
        DockerUnavailable("cannot reach the Docker daemon"),
        TimeoutError("slow"),
        ConnectionRefusedError("refused"),
        BuildTimeout("build of r/x:1 timed out after 1s and was cancelled"),
        PushTimeout("push of r/x:1 timed out after 5s and was aborted", "r"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_failures_are_retried(exc):
    assert is_transient(exc)
    assert retry_on_transient(None, None, Failed(data=exc)) is True


@pytest.mark.parametrize(
    "exc",
    [
        AuthenticationError("registry r refused the credentials", "r"),
        PushAuthenticationError("denied", "r"),  # also a PushError: auth wins
        BuildError("build of r/x failed at Step 2/3 : RUN false: returned a non-zero code: 1"),
        ContextError("build context '/nope' does not exist"),
        InvalidReferenceError("Bad/Name", "repository", "Bad/Name", "must be lowercase"),
        SpecError(["bad"]),
        PushError("push to r failed: manifest invalid", "r"),
        RegistryError("registry r error: teapot", "r"),
        FlyImageError("not in the daemon"),
        ValueError("nope"),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_failures_are_not_retried(exc):
    assert not is_transient(exc)
    assert retry_on_transient(None, None, Failed(data=exc)) is False


def test_retry_condition_without_an_exception_does_not_retry():
    assert retry_on_transient(None, None, Completed(data=None)) is False


def test_retry_delays_are_exponential():
    assert retry_delays(3, 2.0) == [2.0, 4.0, 8.0]
    assert retry_delays(2, 0.5) == [0.5, 1.0]
    assert retry_delays(0, 2.0) == [0.0]


def test_every_task_retries_only_transient_failures():
    for t in (login_task, build_image_task, push_image_task, ensure_image_task):
        assert t.retries >= 1
        assert t.retry_condition_fn is retry_on_transient
        assert t.retry_delay_seconds == retry_delays(t.retries)


def test_configure_retries_sets_count_backoff_and_condition():
    t = configure_retries(ensure_image_task, retries=5, backoff=0.25)
    assert t.retries == 5
    assert t.retry_delay_seconds == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert t.retry_condition_fn is retry_on_transient
    assert isinstance(t.cache_policy, ImageCachePolicy)  # other options survive
    assert ensure_image_task.retries != 5  # a copy, not a mutation


def test_retry_settings_from_the_environment_are_validated(monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_TASK_RETRIES", "7")
    assert _env_number("PREFECT_FLYIMAGE_TASK_RETRIES", 3, int) == 7
    monkeypatch.setenv("PREFECT_FLYIMAGE_TASK_RETRIES", "many")
    with pytest.raises(ValueError, match="PREFECT_FLYIMAGE_TASK_RETRIES"):
        _env_number("PREFECT_FLYIMAGE_TASK_RETRIES", 3, int)
    monkeypatch.setenv("PREFECT_FLYIMAGE_TASK_RETRIES", "")
    assert _env_number("PREFECT_FLYIMAGE_TASK_RETRIES", 3, int) == 3


# ---- progress stream -----------------------------------------------------------------


@pytest.fixture
def log():
    logger = logging.getLogger("test_flyimage_stream")
    logger.setLevel(logging.DEBUG)
    return logger


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "test_flyimage_stream"]


def test_stream_logs_complete_lines_only(log, caplog):
    caplog.set_level(logging.INFO, logger="test_flyimage_stream")
    stream = RunLoggerStream(log)
    stream.write("Step 1/2 : FROM busybox\n ---> abc")
    stream.flush()  # the engine flushes after each chunk: a partial line must wait
    assert _lines(caplog) == ["Step 1/2 : FROM busybox"]
    stream.write("123\nStep 2/2 : RUN true\r\n\n")
    assert _lines(caplog) == ["Step 1/2 : FROM busybox", " ---> abc123", "Step 2/2 : RUN true"]
    stream.write("Successfully built 0123")
    stream.close()
    assert _lines(caplog)[-1] == "Successfully built 0123"
    with pytest.raises(ValueError):
        stream.write("late\n")


def test_stream_drops_progress_bars_and_keeps_layer_results(log, caplog):
    caplog.set_level(logging.INFO, logger="test_flyimage_stream")
    with RunLoggerStream(log) as stream:
        stream.write("The push refers to repository [127.0.0.1:5000/app]\n")
        stream.write("5f70bf18a086: Preparing\n5f70bf18a086: Pushing [=====>     ] 1.2MB/2.4MB\n")
        stream.write("5f70bf18a086: Pushed\n9c1b6dd6c1e6: Layer already exists\n")
        stream.write("abc: digest: sha256:0123 size: 528\n")
    assert _lines(caplog) == [
        "The push refers to repository [127.0.0.1:5000/app]",
        "5f70bf18a086: Pushed",
        "9c1b6dd6c1e6: Layer already exists",
        "abc: digest: sha256:0123 size: 528",
    ]


def test_stream_redacts_secrets_and_uses_the_level(log, caplog):
    caplog.set_level(logging.DEBUG, logger="test_flyimage_stream")
    with RunLoggerStream(log, level=logging.DEBUG, secrets=["s3cr3t-pw", None, ""]) as stream:
        stream.write("login with s3cr3t-pw ok\n")
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == log.name] == [
        (logging.DEBUG, "login with *** ok")
    ]
    assert "s3cr3t-pw" not in caplog.text


def test_stream_does_not_buffer_without_bound(log, caplog):
    caplog.set_level(logging.INFO, logger="test_flyimage_stream")
    stream = RunLoggerStream(log)
    stream.write("x" * (70 * 1024))  # no newline ever
    assert len(_lines(caplog)) == 1


# ---- cache keys --------------------------------------------------------------------------


@pytest.fixture
def plan(tmp_path: Path) -> BuildPlan:
    (tmp_path / "app.txt").write_text("v1\n")
    return BuildPlan(context=tmp_path, dockerfile_text="FROM scratch\nCOPY app.txt /\n", repository="127.0.0.1:5000/t/app")


def test_target_of_a_plan_and_of_its_result_agree(plan):
    target = ImageTarget.of(plan, push=True)
    assert target.tags == plan.all_tags and target.content_tag == plan.content_tag
    result = BuildResult(reference=str(plan.ref), plan_hash=plan.hash, tags=plan.all_tags)
    assert ImageTarget.of(result, push=True) == target
    # A result without tags still targets the content tag.
    bare = BuildResult(reference=f"{plan.repository}:dev", plan_hash=plan.hash)
    assert ImageTarget.of(bare, push=False).tags == ("dev", plan.content_tag)


def test_cache_key_covers_plan_target_and_observed_image(plan):
    target = ImageTarget.of(plan, push=True)
    key = target.key("sha256:" + "a" * 64)
    assert key == ImageTarget.of(plan, push=True).key("sha256:" + "a" * 64)  # deterministic
    assert key.startswith(f"flyimage-{plan.content_tag}-push-") and re.fullmatch(r"[a-z0-9-]+", key)
    others = {
        target.key("sha256:" + "b" * 64),  # the image was rebuilt: new digest
        ImageTarget.of(plan, push=False).key("sha256:" + "a" * 64),  # local vs pushed
        ImageTarget.of(plan.with_(repository="127.0.0.1:5000/t/other"), push=True).key("sha256:" + "a" * 64),
        ImageTarget.of(plan.with_(tag="v1"), push=True).key("sha256:" + "a" * 64),
        ImageTarget.of(plan.with_(dockerfile_text="FROM scratch\n"), push=True).key("sha256:" + "a" * 64),
    }
    assert key not in others and len(others) == 5


def test_force_or_unknown_inputs_bypass_the_cache_without_probing(plan, monkeypatch):
    # DOCKER_HOST points nowhere: any probe would fail; these must not probe at all.
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    policy = ImageCachePolicy()
    assert policy.compute_key(None, {"plan": plan, "force": True}, {}) is None
    assert policy.compute_key(None, {"plan": "not a plan"}, {}) is None
    assert policy.target({"plan": plan}).push is True  # push defaults to True
    assert policy.target({"plan": plan, "push": False}).push is False
    assert ImageCachePolicy(push=False).target({"plan": plan, "push": True}).push is False


def test_unreachable_daemon_means_no_cache_key(plan, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert ImageCachePolicy().compute_key(None, {"plan": plan}, {}) is None


# ---- artifacts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "repository, expected",
    [
        ("127.0.0.1:5000/team/app", "flyimage-127-0-0-1-5000-team-app"),
        ("127.0.0.1:5000/team/app:v1", "flyimage-127-0-0-1-5000-team-app"),
        ("registry.fly.io/my_app@sha256:" + "0" * 64, "flyimage-registry-fly-io-my-app"),
        ("prefecthq/prefect", "flyimage-prefecthq-prefect"),
        ("", "flyimage-image"),
    ],
)
def test_artifact_key(repository, expected):
    assert artifact_key(repository) == expected
    assert ARTIFACT_KEY.match(artifact_key(repository))


def test_long_artifact_keys_stay_valid_and_distinct():
    a = artifact_key("registry.example.com/" + "a" * 200)
    b = artifact_key("registry.example.com/" + "a" * 199 + "b")
    assert a != b and len(a) <= 80 and len(b) <= 80
    assert ARTIFACT_KEY.match(a) and ARTIFACT_KEY.match(b)


def test_markdown_table_rows():
    built = BuildResult(
        reference="127.0.0.1:5000/t/app:0123456789abcdef", plan_hash="0123456789abcdef" + "0" * 48,
        image_id="sha256:" + "1" * 64, digest="sha256:" + "2" * 64, built=True, pushed=True, size=3 * 1024 * 1024,
        timings={"total": 3.5, "build": 2.0, "hash": 0.01, "push": 1.25},
    )
    cached = {"reference": "r/x|y:1", "size": 512, "built": False, "pushed": False}  # as_dict() form
    md = build_result_markdown([built, cached], cache_hits=[False, True])
    lines = md.splitlines()
    assert lines[0] == "### Container images"
    assert lines[2] == "| Reference | Digest | Size | Status | Durations |"
    assert lines[4] == (
        f"| `127.0.0.1:5000/t/app:0123456789abcdef` | `sha256:{'2' * 64}` | 3.0 MiB | built + pushed "
        "| hash 0.01s, build 2.00s, push 1.25s, total 3.50s |"
    )
    # A pipe in a value cannot break the table; a cache hit says so; missing values show a dash.
    assert lines[5] == "| `r/x\\|y:1` | — | 512 B | cached (prefect cache) | — |"


def test_result_status():
    base = dict(reference="r/x:1", plan_hash="0" * 64)
    assert result_status(BuildResult(**base, built=True)) == "built"
    assert result_status(BuildResult(**base, pushed=True)) == "pushed"
    assert result_status(BuildResult(**base)) == "cached"
    assert result_status({"built": True, "pushed": True}) == "built + pushed"
