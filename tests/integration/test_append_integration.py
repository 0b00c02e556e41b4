"""The code tail appended in the registry gives what `docker build` gives: files, modes,
owners and the effective config -- and needs no daemon once the dependency image exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_flyimage._append_path import path_of
from prefect_flyimage.dockerfile import default_dockerfile_text
from prefect_flyimage.pipeline import ensure
from prefect_flyimage.plan import BuildPlan
from prefect_flyimage.registry import RegistryClient

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_fixtures import registry_workdir, token_issuer, token_registry  # noqa: E402,F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from project_files import write_files  # noqa: E402

_CONFIG_KEYS = ("Env", "WorkingDir", "Cmd", "Entrypoint", "User", "ExposedPorts", "Labels")
_LISTING = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /etc/hostname -o -path /etc/hosts "
    "-o -path /etc/resolv.conf \\) -prune -o -print0 | xargs -0 stat -c '%n %a %u:%g %F %s' | sort; "
    "find {paths} -xdev -type f -print0 | xargs -0 -r sha256sum | sort"
)


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _tree(image: str, paths: str) -> list[str]:
    return _docker("run", "--rm", "--entrypoint", "sh", image, "-c", _LISTING.format(paths=paths)).splitlines()


def _config(image: str) -> dict:
    config = json.loads(_docker("image", "inspect", image, "--format", "{{json .Config}}"))
    return {k: config.get(k) or None for k in _CONFIG_KEYS}


def _compare(plan: BuildPlan, unique_name: str, registry_host: str, paths: str) -> str:
    assert path_of(plan)[0] == "append"
    appended = ensure(plan, push=True)
    assert appended.image_id is None and appended.digest  # no local image: made in the registry
    reference = f"{plan.repository}@{appended.digest}"
    _docker("pull", "-q", reference)
    built = ensure(plan.with_(append=False, repository=f"{registry_host}/{unique_name}-built"), push=False)
    assert built.built and built.image_id
    assert _tree(reference, paths) == _tree(built.image_id, paths)
    assert _config(reference) == _config(built.image_id)
    return appended.digest


def test_prefect_default_dockerfile(tmp_path: Path, prefect_image: str, registry_noauth, unique_name: str) -> None:
    project = tmp_path / "flows"
    (project / "pkg").mkdir(parents=True)
    (project / "requirements.txt").write_text("# nothing to install\n")
    (project / "flow.py").write_text("from prefect import flow\n")
    (project / "pkg" / "util.py").write_text("X = 1\n")
    os.chmod(project / "pkg" / "util.py", 0o600)
    text = default_dockerfile_text(project, base_image=prefect_image)
    plan = BuildPlan(context=project, dockerfile_text=text, repository=f"{registry_noauth.host}/{unique_name}")
    _compare(plan, unique_name, registry_noauth.host, "/opt/prefect")


def test_chown_onto_missing_parents(tmp_path: Path, busybox_image: str, registry_noauth, unique_name: str) -> None:
    """Folders that COPY --chown and WORKDIR create (or find) get the owners and modes this
    daemon's builder gives them: run on both stacks (classic 20.10 and BuildKit)."""
    project = tmp_path / "chown"
    (project / "dir" / "sub").mkdir(parents=True)
    (project / "empty").mkdir()
    (project / "a.txt").write_text("a\n")
    (project / "dir" / "b.txt").write_text("b\n")
    (project / "dir" / "sub" / "c.txt").write_text("c\n")
    os.chmod(project / "dir" / "sub", 0o700)
    os.chmod(project / "dir", 0o750)
    (project / "Dockerfile").write_text(
        f"FROM {busybox_image}\n"
        "RUN mkdir -p /existing/sub /srv && chmod 711 /existing && chmod 701 /srv\n"
        "COPY --chown=1000:1001 a.txt /x/y/z/a.txt\n"  # a file's missing parents: the owner's
        "COPY --chown=1000:1001 dir/ /p/q/\n"  # a folder's: its destination (and with BuildKit, above)
        "COPY --chown=1000:1001 dir/ /existing/\n"  # an existing destination keeps mode and owner
        "COPY --chown=1000:1001 a.txt /existing/sub/new/a.txt\n"
        "COPY --chown=1000:1001 a.txt /etc/newdir/\n"
        "COPY dir/ /tmp/\n"  # /tmp keeps its 1777
        "COPY empty/ /made/\n"
        "COPY a.txt /srv\n"  # onto an existing folder's name: into it
        "WORKDIR /w/v\n"
        "COPY --chown=1000:1001 a.txt rel/deep/\n"
        "USER 1000:1002\n"
        "WORKDIR /wk/here\n"  # classic: root's; BuildKit: the USER's
    )
    plan = BuildPlan.from_dockerfile(project, f"{registry_noauth.host}/{unique_name}")
    _compare(plan, unique_name, registry_noauth.host, "/x /p /existing /etc/newdir /tmp /made /srv /w /wk")


def test_user_dockerfile_with_metadata_and_dockerignore(tmp_path: Path, busybox_image: str, registry, creds, unique_name: str,
                                                        monkeypatch: pytest.MonkeyPatch, registry_noauth, docker_client) -> None:
    daemon = os.environ["DOCKER_HOST"]
    project = write_files(tmp_path / "proj", {
        "src/pkg/mod.py": "x = 1\n", "src/debug.log": "no\n", "main.py": "print(1)\n", "conf.ini": "[a]\n",
        "deps.txt": "dep\n", ".dockerignore": "src/*.log\n",
        "Dockerfile": f"FROM {busybox_image}\nCOPY deps.txt /deps/\nRUN cat /deps/deps.txt > /installed\n"
                      "WORKDIR /srv\nENV APP_ENV=prod GREETING=\"hello world\"\nLABEL team=data\n"
                      "COPY --chown=1000:1000 src/ lib/\nCOPY main.py conf.ini ./\nUSER 1000\nEXPOSE 8080\n"
                      "ENTRYPOINT [\"sh\", \"-c\"]\nCMD [\"cat main.py\"]\n",
    })
    os.chmod(project / "main.py", 0o755)
    # the auth registry, through the docker config's credentials as every other path
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    import base64

    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    plan = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    digest = _compare(plan, unique_name, registry.host, "/srv /installed /deps")

    # code change only: the dependency image is reused, no daemon is needed at all
    (project / "main.py").write_text("print(2)\n")
    changed = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = ensure(changed, push=True)
    assert result.digest and result.digest != digest and not result.built and result.pushed
    with RegistryClient(registry.host, creds) as client:
        assert client.manifest_digest(f"{registry.host}/{unique_name}:{changed.content_tag}") == result.digest
        config = client.config(f"{registry.host}/{unique_name}:{changed.content_tag}")
    assert config["config"]["Labels"]["io.prefect-flyimage.plan-hash"] == changed.hash

    # The same through DockerImage (build() then push(), as flow.deploy calls them). Its base
    # is an input (issue 16): with pull=True it is resolved in its registry, so once the
    # dependency image is there a code-only redeploy needs no daemon either.
    from prefect_flyimage import DockerImage

    monkeypatch.setenv("DOCKER_HOST", daemon)
    base = f"{registry_noauth.host}/{unique_name}-base:1"
    docker_client.images.get(busybox_image).tag(base)
    docker_client.images.push(base)
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(f"FROM {busybox_image}", f"FROM {base}"))
    monkeypatch.chdir(project)

    def deploy() -> DockerImage:
        image = DockerImage(f"{registry.host}/{unique_name}", dockerfile="Dockerfile", stream_progress_to=None, pull=True)
        image.build()
        image.push()
        return image

    deploy()  # the dependency image of this plan (its base pinned by digest) is built once
    (project / "main.py").write_text("print(3)\n")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    image = deploy()
    assert image.digest and image.result.image_id is None and not image.result.built
    with RegistryClient(registry.host, creds) as client:
        assert client.manifest_digest(image.reference) == image.digest


def test_same_code_same_layer_in_two_repositories(tmp_path: Path, busybox_image: str, registry_noauth, unique_name: str) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "app.py").write_text("print('same')\n")
    (project / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\nCOPY app.py /app/\n")
    layers = []
    for suffix in ("a", "b"):
        plan = BuildPlan.from_dockerfile(project, f"{registry_noauth.host}/{unique_name}-{suffix}")
        result = ensure(plan, push=True)
        with RegistryClient(registry_noauth.host) as client:
            body, _, _ = client.get_manifest(f"{plan.repository}@{result.digest}")
        layers.append(json.loads(body)["layers"][-1]["digest"])
    assert layers[0] == layers[1]


def test_inspect_says_which_path_and_why(tmp_path: Path, busybox_image: str, registry_noauth, unique_name: str) -> None:
    import sys

    project = tmp_path / "p"
    project.mkdir()
    (project / "app.py").write_text("x\n")
    (project / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\nCOPY app.py /app/\n")
    (project / "Other.Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\nADD app.py /app/\n")
    repo = f"{registry_noauth.host}/{unique_name}"

    def inspect(dockerfile: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "prefect_flyimage.cli", "inspect", str(project), "-r", repo, "-f", dockerfile, "--json"],
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    splits = inspect("Dockerfile")
    assert splits["path"] == "append" and splits["dependency_tag"]
    whole = inspect("Other.Dockerfile")
    assert whole["path"] == "build" and "ADD may fetch URLs" in whole["path_reason"]


class _RefusingProxy:
    """A loopback HTTP proxy in front of a registry that refuses one kind of write.

    ``refuse``: ``"blob"`` (blob upload PUTs) or ``"manifest"`` (manifest PUTs): answered
    with HTTP 400 and a Distribution error body, as a registry refusing the content would.
    """

    def __init__(self, upstream: str, refuse: str) -> None:
        import http.server
        import threading

        import httpx

        self.upstream, self.refuse = upstream, refuse
        client = httpx.Client(timeout=30)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_put = self.command == "PUT"
                if is_put and ((proxy.refuse == "blob" and "/blobs/uploads/" in self.path)
                               or (proxy.refuse == "manifest" and "/manifests/" in self.path)):
                    payload = json.dumps({"errors": [{"code": "DENIED", "message": f"refused {proxy.refuse}"}]}).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                r = client.request(self.command, f"http://{proxy.upstream}{self.path}", headers=headers, content=body)
                data = r.content
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        continue
                    if k.lower() == "location":
                        v = v.replace(proxy.upstream, proxy.host)
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._client = client

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()


@pytest.mark.parametrize("refuse", ["blob", "manifest"])
def test_refused_write_raises_and_leaves_no_tag(tmp_path: Path, busybox_image: str, registry_noauth, unique_name: str,
                                                refuse: str) -> None:
    from prefect_flyimage._split import split_plan
    from prefect_flyimage.errors import RegistryError

    project = tmp_path / "p"
    project.mkdir()
    (project / "app.py").write_text(f"print({refuse!r})\n")
    (project / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\nCOPY app.py /app/\n")
    real = BuildPlan.from_dockerfile(project, f"{registry_noauth.host}/{unique_name}")
    ensure(split_plan(real).dependency, push=True)  # the dependency image, straight into the registry
    proxy = _RefusingProxy(registry_noauth.host, refuse)
    try:
        through = real.with_(repository=f"{proxy.host}/{unique_name}")
        with pytest.raises(RegistryError, match="HTTP 400"):
            ensure(through, push=True)
    finally:
        proxy.close()
    with RegistryClient(registry_noauth.host) as client:
        assert client.manifest_digest(f"{registry_noauth.host}/{unique_name}:{real.content_tag}") is None


@pytest.mark.slow
@pytest.mark.prefect_compat
def test_docker_worker_runs_an_appended_image(tmp_path: Path, prefect_server: str, registry_noauth, unique_name: str,
                                              prefect_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import textwrap

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_docker.worker import DockerWorker

    from prefect_flyimage import DockerImage

    project = tmp_path / "appendflows"
    project.mkdir()
    (project / "requirements.txt").write_text("# nothing to install\n")
    (project / "flows.py").write_text(textwrap.dedent(f"""\
        from prefect import flow

        @flow(name="appended-{unique_name}")
        def hello() -> str:
            return "appended"
        """))
    monkeypatch.chdir(project)
    pool = f"pool-{unique_name}"

    async def create() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(
                name=pool, type="docker", base_job_template=DockerWorker.get_default_base_job_template()))

    run_coro_as_sync(create())
    hello = load_flow_from_entrypoint(str(project / "flows.py:hello"))
    repository = f"{registry_noauth.host}/{unique_name}"
    image = DockerImage(repository, stream_progress_to=None, pull=False, network_mode="host")
    # build() appends only where the project published before (it never pushes the
    # dependency image itself: flow.deploy(push=False) writes nothing): publish it first
    from prefect_flyimage._append_path import seed_dependency

    assert seed_dependency(image.plan)
    image.build()
    # the image must come from the registry append: it is in no daemon
    assert image.result.digest and image.result.image_id is None
    assert subprocess.run(["docker", "image", "inspect", image.reference], capture_output=True).returncode != 0
    hello.deploy(name="appended", work_pool_name=pool, image=image, build=False, push=False, print_next_steps=False,
                 job_variables={"network_mode": "host"})
    flow_run = run_deployment(f"appended-{unique_name}/appended", timeout=0)
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "docker", "--run-once",
         "--name", f"worker-{unique_name}", "--install-policy", "never"],
        env={**os.environ, "PREFECT_API_URL": prefect_server}, capture_output=True, text=True, timeout=600,
    )

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run.id)

    run = run_coro_as_sync(read())
    assert run.state.type == StateType.COMPLETED, f"{run.state}\n{worker.stdout}\n{worker.stderr}"


def test_index_gets_a_new_index(tmp_path: Path, busybox_image: str, registry_noauth, unique_name: str) -> None:
    """A multi-platform dependency image (a manifest list): each platform's manifest is appended
    to and a new index is put under the content tag."""
    from prefect_flyimage._split import split_plan

    project = tmp_path / "p"
    project.mkdir()
    (project / "app.py").write_text("print('index')\n")
    (project / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\nCOPY app.py /app/\n")
    plan = BuildPlan.from_dockerfile(project, f"{registry_noauth.host}/{unique_name}")
    dep = split_plan(plan).dependency
    ensure(dep, push=True)
    with RegistryClient(registry_noauth.host) as client:
        body, media_type, digest = client.get_manifest(dep.content_ref)
        index = {
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [{"mediaType": media_type, "digest": digest, "size": len(body),
                           "platform": {"os": "linux", "architecture": "amd64"}}],
        }
        client.put_manifest(dep.content_ref.repository, dep.content_tag, json.dumps(index).encode(), index["mediaType"])
        result = ensure(plan, push=True)
        new_body, new_type, _ = client.get_manifest(plan.content_ref)
        assert new_type == "application/vnd.docker.distribution.manifest.list.v2+json"
        child = json.loads(new_body)["manifests"][0]
        assert child["platform"] == {"os": "linux", "architecture": "amd64"} and child["digest"] != digest
        config = client.config(plan.content_ref, "linux/amd64")
    assert config["config"]["Labels"]["io.prefect-flyimage.plan-hash"] == plan.hash
    reference = f"{plan.repository}@{result.digest}"
    _docker("pull", "-q", reference)
    assert _docker("run", "--rm", reference, "cat", "/app/app.py") == "print('index')\n"


def test_bearer_token_registry_grants_push_for_the_append(  # noqa: F811 (fixtures imported above)
    tmp_path: Path, busybox_image: str, token_registry, token_issuer, unique_name: str,  # noqa: F811
) -> None:
    from prefect_flyimage.credentials import RegistryCredentials

    creds = RegistryCredentials(token_registry.host, "ci", token_issuer.users["ci"])
    project = tmp_path / "p"
    project.mkdir()
    (project / "app.py").write_text("print('token')\n")
    (project / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\nCOPY app.py /app/\n")
    plan = BuildPlan.from_dockerfile(project, f"{token_registry.host}/{unique_name}")
    first = ensure(plan, push=True, credentials=creds)  # builds and pushes the dependency, then appends
    (project / "app.py").write_text("print('token 2')\n")
    changed = BuildPlan.from_dockerfile(project, f"{token_registry.host}/{unique_name}")
    second = ensure(changed, push=True, credentials=creds)
    assert first.built and not second.built and second.pushed and second.image_id is None
    with RegistryClient(token_registry.host, creds) as client:
        assert client.manifest_digest(str(changed.content_ref)) == second.digest
    assert token_issuer.users["ci"] not in repr(second)


def test_image_dirs_reads_layers_newest_first(registry_noauth, unique_name: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The folders an append keeps as the image has them: found in the newest layer that
    says (an entry, a whiteout, an opaque folder), from blobs in a real registry."""
    import gzip
    import hashlib
    import io
    import tarfile

    from prefect_flyimage._append import ImageDirs

    def layer(*members: tuple[str, str, int, int]) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, kind, mode, owner in members:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.REGTYPE
                info.mode, info.uid, info.gid = mode, owner, owner
                tar.addfile(info, io.BytesIO(b""))
        return gzip.compress(raw.getvalue())

    bottom = layer(("a", "dir", 0o755, 0), ("a/b", "dir", 0o700, 5), ("a/b/old", "dir", 0o755, 0),
                   ("tmp", "dir", 0o1777, 0), ("gone", "dir", 0o755, 0), ("f", "file", 0o644, 0))
    middle = layer(("a/b", "dir", 0o750, 7), ("a/b/.wh..wh..opq", "file", 0o644, 0), ("./.wh.gone", "file", 0o644, 0))
    top = layer(("a/b/c", "file", 0o644, 0))
    digests = []
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    with RegistryClient(registry_noauth.host) as client:
        for blob in (bottom, middle, top):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            client.upload_blob(unique_name, blob, digest)
            digests.append(digest)
        dirs = ImageDirs(client, unique_name, digests)
        assert dirs("/a") == (0o755, 0, 0)
        assert dirs("/a/b") == (0o750, 7, 7)  # the middle layer's entry, not the bottom's
        assert dirs("/a/b/old") is None  # hidden by the middle layer's opaque a/b
        assert dirs("/gone") is None  # whited out
        assert dirs("/tmp") == (0o1777, 0, 0)
        assert dirs("/f") is None and dirs("/nowhere") is None
        assert dirs("/") is True
    assert len(list((tmp_path / "cache" / "layer-dirs").iterdir())) == 3  # each layer's listing, kept
    # a second reader takes the listings from the cache: the same answers
    with RegistryClient(registry_noauth.host) as client:
        assert ImageDirs(client, unique_name, digests)("/a/b") == (0o750, 7, 7)
