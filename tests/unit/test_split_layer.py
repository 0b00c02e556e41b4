"""The split after the last RUN, the deterministic code layer and the config it leads to."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from prefect_flyimage._append_path import path_of
from prefect_flyimage._layer import apply_config, layer_entries, write_layer
from prefect_flyimage._split import split_plan
from prefect_flyimage.dockerfile import default_dockerfile_text
from prefect_flyimage.errors import ContextError
from prefect_flyimage.plan import BuildPlan

REPO = "127.0.0.1:5001/split/app"


def _project(tmp_path: Path, dockerfile: str, files: dict[str, str], ignore: str = "") -> BuildPlan:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    if ignore:
        (tmp_path / ".dockerignore").write_text(ignore)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return BuildPlan.from_dockerfile(tmp_path, REPO, stat_cache=False)


def test_prefect_default_dockerfile_splits_and_dependency_hash_ignores_code(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("httpx\n")
    (tmp_path / "flow.py").write_text("print(1)\n")
    text = default_dockerfile_text(tmp_path, base_image="prefecthq/prefect:3.9.1-python3.11")
    plan = BuildPlan(context=tmp_path, dockerfile_text=text, repository=REPO, stat_cache=False)
    split = split_plan(plan)
    assert split.reason is None and split.dependency is not None
    assert [s.keyword for s in split.steps] == ["COPY", "WORKDIR"]
    assert split.dependency.dockerfile_text.splitlines()[-1].startswith("RUN uv pip install")
    assert [e.path for e in split.dependency.build_context.entries()] == ["requirements.txt"]
    dep_hash, full_hash = split.dependency.hash, plan.hash
    (tmp_path / "flow.py").write_text("print(2)\n")
    plan2 = BuildPlan(context=tmp_path, dockerfile_text=text, repository=REPO, stat_cache=False)
    assert split_plan(plan2).dependency.hash == dep_hash  # type: ignore[union-attr]
    assert plan2.hash != full_hash
    (tmp_path / "requirements.txt").write_text("httpx\nrich\n")
    plan3 = BuildPlan(context=tmp_path, dockerfile_text=text, repository=REPO, stat_cache=False)
    assert split_plan(plan3).dependency.hash != dep_hash  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("dockerfile", "reason"),
    [
        ("FROM a AS b\nRUN x\nFROM c\nRUN y\nCOPY --from=b /x /x\n", "COPY --from"),
        ("FROM a AS b\nRUN x\nFROM c\nCOPY app.py /app/\n", "final stage has no RUN"),
        ("FROM a\nCOPY app.py /app/\nCMD [\"x\"]\n", "final stage has no RUN"),
        ("FROM a\nRUN x\nADD app.tar.gz /app/\n", "ADD may fetch"),
        ("FROM a\nRUN x\nCOPY --chown=app:app . /app\n", "names a user"),
        ("FROM a\nRUN x\nCOPY --chmod=755 . /app\n", "--chmod"),
        ("FROM a\nRUN x\nENV P=/opt\nCOPY . $P\n", "variable"),
        ("FROM a\nRUN x\nCOPY . /app\nHEALTHCHECK CMD true\n", "HEALTHCHECK"),
        ("FROM a\nCOPY . /app\nRUN make\n", "nothing follows"),
        ("FROM a\nCOPY . /src\nRUN make\nCOPY app.py /app/\n", "whole context"),
        ("FROM a\nRUN x\nCMD [\"python\"]\n", "copy no files"),
    ],
)
def test_dockerfiles_that_do_not_split_say_why(tmp_path: Path, dockerfile: str, reason: str) -> None:
    plan = _project(tmp_path, dockerfile, {"app.py": "x"})
    split = split_plan(plan)
    assert split.dependency is None
    assert reason in (split.reason or "")
    assert path_of(plan)[0] == "build"


def test_opt_outs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _project(tmp_path, "FROM a\nRUN x\nCOPY app.py /app/\n", {"app.py": "x"})
    assert path_of(plan)[0] == "append"
    assert path_of(plan.with_(append=False)) [1].reason == "the plan opts out (append=False)"
    monkeypatch.setenv("PREFECT_FLYIMAGE_APPEND", "0")
    assert path_of(plan)[0] == "build"


def test_copy_path_semantics_and_dockerignore(tmp_path: Path) -> None:
    plan = _project(
        tmp_path,
        "FROM a\nRUN x\nWORKDIR /srv\nCOPY --chown=1000:1001 src/ lib/\nCOPY main.py .\nCOPY conf.ini /etc/app.ini\n"
        "COPY *.txt /data/\nCOPY conf.ini /srv\n",
        {"src/pkg/m.py": "m", "src/skip.log": "s", "main.py": "p", "conf.ini": "c", "a.txt": "a", "b.txt": "b",
         "secret.key": "k"},
        ignore="src/*.log\nsecret.key\n",
    )
    os.chmod(tmp_path / "main.py", 0o755)
    split = split_plan(plan)
    members = layer_entries(split, plan.build_context.entries(), "/", dir_exists=lambda p: p in ("/etc",))
    got = {m.path: (m.entry.kind, m.uid, m.gid) for m in members}
    assert got == {
        "/srv": ("dir", 0, 0),  # made by WORKDIR (the image has no /srv)
        "/data": ("dir", 0, 0),  # made by COPY, root's
        "/srv/lib": ("dir", 1000, 1001),
        "/srv/lib/pkg": ("dir", 1000, 1001),
        "/srv/lib/pkg/m.py": ("file", 1000, 1001),
        "/srv/main.py": ("file", 0, 0),
        "/etc/app.ini": ("file", 0, 0),
        "/data/a.txt": ("file", 0, 0),
        "/data/b.txt": ("file", 0, 0),
        "/srv/conf.ini": ("file", 0, 0),  # the WORKDIR exists: a file goes into it
    }
    assert next(m for m in members if m.path == "/srv/main.py").entry.mode == 0o755


def _tar_names(blob: bytes) -> list[tuple[str, int, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return [(m.name, m.mtime, m.uid, m.mode) for m in tar.getmembers()]


def test_layer_is_deterministic_and_sorted(tmp_path: Path) -> None:
    files = {"z.py": "z", "a/b.py": "b", "a/c.py": "c"}
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    plans = [_project(d, "FROM a\nRUN x\nCOPY . /app/\n", files) for d in (one, two)]
    os.utime(two / "z.py", (1, 1))  # other mtimes, other machine: same bytes
    layers = []
    for plan in plans:
        split = split_plan(plan)
        layers.append(write_layer(plan.context, layer_entries(split, plan.build_context.entries(), "/")))
    assert layers[0].digest == layers[1].digest and layers[0].diff_id == layers[1].diff_id
    names = _tar_names(layers[0].blob)
    assert [n[0] for n in names] == sorted(n[0] for n in names)
    assert {n[1] for n in names} == {0} and {n[2] for n in names} == {0}
    assert "app/a/b.py" in [n[0] for n in names]


def test_file_changed_after_hashing_is_refused(tmp_path: Path) -> None:
    plan = _project(tmp_path, "FROM a\nRUN x\nCOPY app.py /app/\n", {"app.py": "one"})
    split = split_plan(plan)
    members = layer_entries(split, plan.build_context.entries(), "/")
    (tmp_path / "app.py").write_text("two")
    with pytest.raises(ContextError, match="changed while"):
        write_layer(plan.context, members)


def test_symlink_escaping_the_context_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    proj = tmp_path / "proj"
    proj.mkdir()
    plan = _project(proj, "FROM a\nRUN x\nCOPY src /app/\n", {"src/ok.py": "x"})
    os.symlink(outside, proj / "src" / "leak")
    plan = BuildPlan.from_dockerfile(proj, REPO, stat_cache=False)
    with pytest.raises(ContextError, match="points outside the context"):
        layer_entries(split_plan(plan), plan.build_context.entries(), "/")


def test_config_follows_the_tail(tmp_path: Path) -> None:
    plan = _project(
        tmp_path,
        "FROM a\nRUN x\nWORKDIR app\nENV PATH=/x A=1\nLABEL team=data\nUSER 1000\nEXPOSE 8080 53/udp\n"
        "ENTRYPOINT python -m app\nCOPY app.py ./\n",
        {"app.py": "x"},
    )
    split = split_plan(plan)
    layer = write_layer(plan.context, layer_entries(split, plan.build_context.entries(), "/srv"))
    base = {"created": "2020-01-01T00:00:00Z", "config": {"Env": ["PATH=/bin", "HOME=/root"], "WorkingDir": "/srv", "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]}, "history": [{"created_by": "base"}]}
    new = apply_config(base, split, layer, {"io.prefect-flyimage.plan-hash": plan.hash})
    c = new["config"]
    assert c["WorkingDir"] == "/srv/app"
    assert c["Env"] == ["PATH=/x", "HOME=/root", "A=1"]
    assert c["Labels"] == {"team": "data", "io.prefect-flyimage.plan-hash": plan.hash}
    assert c["User"] == "1000" and c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["Entrypoint"] == ["/bin/sh", "-c", "python -m app"] and c["Cmd"] is None
    assert new["rootfs"]["diff_ids"] == ["sha256:aa", layer.diff_id]
    assert new["created"] == "2020-01-01T00:00:00Z"
    assert base["config"]["WorkingDir"] == "/srv"  # the input is not changed


@pytest.mark.parametrize("classic", [False, True])
def test_absolute_workdir_kept_as_written(tmp_path: Path, classic: bool) -> None:
    # Checked on real daemons: BuildKit and Docker 20.10's classic builder keep
    # `WORKDIR /opt/app/` as written (tests/integration/test_append_integration.py compares).
    plan = _project(tmp_path, "FROM a\nRUN x\nCOPY . /opt/app/\nWORKDIR /opt/app/\n", {"app.py": "x"})
    split = split_plan(plan)
    layer = write_layer(plan.context, layer_entries(split, plan.build_context.entries(), "/"))
    new = apply_config({"config": {}, "rootfs": {"type": "layers", "diff_ids": []}}, split, layer, {}, classic=classic)
    assert new["config"]["WorkingDir"] == "/opt/app/"


def test_buildkit_plans_split_and_bind_mounted_files_are_dependency_inputs(tmp_path: Path) -> None:
    plan = _project(
        tmp_path,
        "FROM a\nRUN --mount=type=cache,target=/root/.cache/pip --mount=type=bind,source=req.txt,target=/tmp/r.txt "
        "pip install -r /tmp/r.txt\nCOPY app.py /app/\n",
        {"req.txt": "httpx\n", "app.py": "x = 1\n"},
    )
    split = split_plan(plan)
    assert split.reason is None and split.dependency is not None
    assert [e.path for e in split.dependency.build_context.entries()] == ["req.txt"]
    dep_hash = split.dependency.hash
    (tmp_path / "req.txt").write_text("httpx\nrich\n")  # a new requirement: a new dependency image
    again = BuildPlan.from_dockerfile(tmp_path, REPO, stat_cache=False)
    assert split_plan(again).dependency.hash != dep_hash  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("dockerfile", "reason"),
    [
        ("FROM a\nRUN --mount=type=bind,target=/src make\nCOPY app.py /app/\n", "whole context"),
        ("FROM a\nRUN <<EOF\nmake\nEOF\nCOPY app.py /app/\n", "heredocs"),
    ],
)
def test_buildkit_plans_that_do_not_split(tmp_path: Path, dockerfile: str, reason: str) -> None:
    split = split_plan(_project(tmp_path, dockerfile, {"app.py": "x"}))
    assert split.dependency is None and reason in (split.reason or "")


def test_image_spec_code_layers_split(tmp_path: Path) -> None:
    from prefect_flyimage._split import context_folder
    from prefect_flyimage.spec import Image

    (tmp_path / "requirements.txt").write_text("httpx\n")
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "flow.py").write_text("print(1)\n")

    def image() -> Image:
        return (Image.from_base("127.0.0.1:5001/busybox:1").clone(registry="127.0.0.1:5001", name="split-spec")
                .with_requirements(tmp_path / "requirements.txt").with_workdir("/app")
                .with_source_folder(tmp_path / "src", "/app/src").with_source_file(tmp_path / "flow.py", "/app/")
                .with_env_vars({"MODE": "prod"}))

    plan = image().plan()
    path, split = path_of(plan)
    assert path == "append" and split.dependency is not None
    assert [s.keyword for s in split.steps] == ["WORKDIR", "COPY", "COPY", "ENV"]
    # the dependency context is what the install step reads (bind-mounted), nothing else
    assert [e.path for e in split.dependency.build_context.entries()] == ["layers/00-requirements/requirements.txt"]
    with context_folder(plan) as root:
        members = layer_entries(split, plan.build_context.entries(), "/", root)
        got = {m.path: m.entry.kind for m in members}
        # /app/src (a new folder, root's) is made by the extraction, as COPY makes it
        assert got == {"/app/src/pkg": "dir", "/app/src/pkg/mod.py": "file", "/app/flow.py": "file"}
        layer = write_layer(root, members)
    names = [n for n, *_ in _tar_names(layer.blob)]
    assert names == ["app/flow.py", "app/src/pkg", "app/src/pkg/mod.py"]
    # a code-only change keeps the dependency image, a new requirement makes a new one
    dep_hash = split.dependency.hash
    (tmp_path / "flow.py").write_text("print(2)\n")
    assert path_of(image().plan())[1].dependency.hash == dep_hash  # type: ignore[union-attr]
    (tmp_path / "requirements.txt").write_text("httpx\nrich\n")
    assert path_of(image().plan())[1].dependency.hash != dep_hash  # type: ignore[union-attr]


def _members(tmp_path: Path, tail: str, image_dirs: set[str], classic: bool, user: str = "") -> dict[str, tuple[int, int, int]]:
    (tmp_path / "dir" / "sub").mkdir(parents=True, exist_ok=True)
    (tmp_path / "dir" / "b.txt").write_text("b")
    (tmp_path / "dir" / "sub" / "c.txt").write_text("c")
    (tmp_path / "empty").mkdir(exist_ok=True)
    os.chmod(tmp_path / "dir", 0o750)
    plan = _project(tmp_path, "FROM a\nRUN x\n" + tail, {"a.txt": "a"})
    split = split_plan(plan)
    assert split.reason is None, split.reason
    asked: list[str] = []

    def exists(path: str) -> bool:
        asked.append(path)
        return path in image_dirs

    members = layer_entries(split, plan.build_context.entries(), "/", dir_exists=exists, classic=classic, user=user)
    return {m.path: (m.entry.mode & 0o7777, m.uid, m.gid) for m in members if m.entry.kind == "dir"}


@pytest.mark.parametrize("classic", [True, False])
def test_chown_creates_missing_parents_as_docker_does(tmp_path: Path, classic: bool) -> None:
    # Measured on Docker 20.10 (classic builder) and Docker 26 (BuildKit), see
    # tests/integration/test_append_integration.py::test_chown_onto_missing_parents.
    dirs = _members(tmp_path, "COPY --chown=1000:1001 a.txt /x/y/z/a.txt\nCOPY --chown=1000:1001 a.txt /etc/new/\n"
                    "COPY --chown=1000:1001 dir/ /p/q/\nCOPY --chown=1000:1001 dir/ /existing/\n",
                    {"/etc", "/existing"}, classic)
    assert dirs["/x"] == dirs["/x/y"] == dirs["/x/y/z"] == dirs["/etc/new"] == (0o755, 1000, 1001)  # a file's parents: the owner
    assert "/etc" not in dirs and "/existing" not in dirs  # folders the image has keep mode and owner
    assert dirs["/p/q"] == (0o755, 1000, 1001)  # a new destination folder: 0755, not the source's 0750
    assert dirs["/p/q/sub"][1:] == (1000, 1001)
    # above a folder copy's destination: BuildKit owns the new parents too, classic makes them root
    assert dirs["/p"] == ((0o755, 0, 0) if classic else (0o755, 1000, 1001))


@pytest.mark.parametrize("classic", [True, False])
def test_folders_above_entries_are_in_the_layer_as_the_image_has_them(tmp_path: Path, classic: bool) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "b.txt").write_text("b")
    (tmp_path / "empty").mkdir()
    plan = _project(tmp_path, "FROM a\nRUN x\nCOPY dir/ /tmp/\nCOPY a.txt /new/deep/\nCOPY empty/ /made/\n", {"a.txt": "a"})
    image = {"/tmp": (0o1777, 0, 0)}
    members = layer_entries(split_plan(plan), plan.build_context.entries(), "/", dir_exists=image.get, classic=classic)
    dirs = {m.path: (m.entry.mode & 0o7777, m.uid, m.gid) for m in members if m.entry.kind == "dir"}
    assert dirs["/tmp"] == (0o1777, 0, 0)  # kept as the image has it (not the extraction's 0755)
    assert dirs["/new"] == dirs["/new/deep"] == dirs["/made"] == (0o755, 0, 0)  # new ones, root's


def test_workdir_folders_owned_as_each_builder_makes_them(tmp_path: Path) -> None:
    tail = "USER 1000:1002\nWORKDIR /wk\nCOPY a.txt /other/\n"
    assert _members(tmp_path, tail, set(), classic=True)["/wk"] == (0o755, 0, 0)
    assert _members(tmp_path, tail, set(), classic=False)["/wk"] == (0o755, 1000, 1002)
    assert "/wk" not in _members(tmp_path, tail, {"/wk"}, classic=False)  # it exists: untouched
    from prefect_flyimage.errors import AppendNotApplicable

    with pytest.raises(AppendNotApplicable, match="USER 'app'"):
        _members(tmp_path, "WORKDIR /wk\nCOPY a.txt /other/\n", set(), classic=False, user="app")


def test_file_onto_an_existing_folder_name_goes_into_it(tmp_path: Path) -> None:
    plan = _project(tmp_path, "FROM a\nRUN x\nCOPY a.txt /srv\n", {"a.txt": "a"})
    members = layer_entries(split_plan(plan), plan.build_context.entries(), "/", dir_exists=lambda p: p == "/srv")
    assert [m.path for m in members] == ["/srv/a.txt"]
    members = layer_entries(split_plan(plan), plan.build_context.entries(), "/", dir_exists=lambda p: False)
    assert [m.path for m in members] == ["/srv"]
