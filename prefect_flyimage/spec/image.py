"""The declarative :class:`Image`: Flyte 2's ``flyte.Image`` API for Prefect deployments.

An image is a base (a Prefect image, any image, a configured name, a uv script or a
Dockerfile) plus layers, each added by a ``with_*`` method that returns a *new* image.
Its :attr:`Image.uri` is ``<registry>/<name>:<hash>``, where the hash covers the base,
the platform, every layer's Dockerfile lines and the contents of every local file it
copies (after ``.dockerignore``), length-prefixed so that no two specs collide by
concatenation. Building goes through :func:`prefect_flyimage.pipeline.ensure`, so an
image whose URI already exists is neither built nor pushed again.

Example::

    from prefect_flyimage import Image

    image = (
        Image.from_debian_base(registry="ghcr.io/acme", name="etl")
        .with_apt_packages("git")
        .with_pip_packages("pandas>=2,<3")
        .with_code_bundle()
    )
    my_flow.deploy("etl", work_pool_name="docker", image=image)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Optional, Sequence, Union

from ..errors import FlyImageError, SpecError
from ..names import ImageRef
from ..plan import TAG_LENGTH
from ..prefect_images import get_prefect_image_name
from . import _checks, config
from ._build import SpecDockerImage, _Building
from ._validate import _Validation
from ._values import (
    DEFAULT_PLATFORM,
    Architecture,
    Platforms,
    PythonVersion,
    SecretMounts,
    Urls,
    _absolute,
    _current_python,
    _pip_options,
    _platforms,
    _python_version,
)
from .layers import (
    AptPackages,
    CodeBundle,
    Commands,
    DockerIgnore,
    Env,
    Layer,
    PipPackages,
    PoetryProject,
    Requirements,
    SourceFiles,
    SourceFolder,
    UVProject,
    UVScript,
    WorkDir,
    as_secrets,
)

__all__ = ["Architecture", "DEFAULT_NAME", "DEFAULT_PLATFORM", "Image", "SpecDockerImage"]

#: Name (repository) of images that were given none, e.g. ``from_debian_base().with_...``.
DEFAULT_NAME = "prefect-flyimage"
#: Hex digits of the plan hash used as the URI's tag (the plan's content tag).
URI_TAG_LENGTH = TAG_LENGTH


@dataclass(frozen=True)
class Image(_Validation, _Building):
    """A container image specification, built with a fluent two-step pattern.

    1. Start from a ``from_*`` constructor: :meth:`from_debian_base`, :meth:`from_base`,
       :meth:`from_ref_name`, :meth:`from_uv_script` or :meth:`from_dockerfile`.
    2. Customise it with ``with_*`` methods; each returns a new, immutable ``Image``.

    Problems (a missing file, a layer on a Dockerfile image, no name) are collected, not
    raised one by one: :meth:`validate` -- also run by :attr:`uri` and the build
    methods -- raises one :class:`~prefect_flyimage.errors.SpecError` listing them all.

    Flyte's ``with_local_v2`` and ``with_local_v2_plugins`` (which bake a local build of
    the Flyte SDK into the image) have no counterpart here: install a local Prefect or
    plugin build with :meth:`with_source_folder` plus :meth:`with_pip_packages`.

    Attributes:
        base_image: the image this one starts ``FROM`` (``None`` for Dockerfile images and,
            until resolved, for :meth:`from_ref_name` images).
        dockerfile: the Dockerfile of a :meth:`from_dockerfile` image.
        registry: where the image is pushed (``host[:port][/namespace]``); when ``None``,
            ``$PREFECT_FLYIMAGE_REGISTRY`` or ``registry`` in ``[tool.prefect-flyimage]``.
        name: the repository name within the registry.
        platform: target platforms; the local builder builds exactly one.
        python_version: ``(major, minor)`` of the image's Python.
        extendable: whether layers may be added. True for every constructor except
            :meth:`from_dockerfile` (make a Dockerfile image extendable with
            ``clone(extendable=True)``; layers then go after the Dockerfile's last stage).
    """

    base_image: Optional[str] = None
    dockerfile: Optional[Path] = None
    registry: Optional[str] = None
    name: Optional[str] = None
    platform: tuple[Architecture, ...] = DEFAULT_PLATFORM
    python_version: tuple[int, int] = field(default_factory=_current_python)
    extendable: bool = False
    _layers: tuple[Layer, ...] = ()
    _ref_name: Optional[str] = None
    _cloned: bool = False
    _registry_secret: Any = field(default=None, compare=False, repr=False)

    _token: ClassVar[object] = object()

    def __post_init__(self) -> None:
        if self.__dict__.pop("_guard", None) is not Image._token:
            raise TypeError("create images with Image.from_debian_base(), from_base(), from_ref_name(), "
                            "from_uv_script() or from_dockerfile(), not Image(...)")

    @classmethod
    def _new(cls, **kwargs: Any) -> "Image":
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_guard", cls._token)
        cls.__init__(obj, **kwargs)  # type: ignore[misc]
        return obj

    def _replace(self, **changes: Any) -> "Image":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Image._new(**values)

    # ---- constructors --------------------------------------------------------------
    @classmethod
    def from_debian_base(
        cls,
        python_version: Optional[PythonVersion] = None,
        prefect_version: Optional[str] = None,
        install_prefect: bool = True,
        registry: Optional[str] = None,
        registry_secret: Any = None,
        name: Optional[str] = None,
        platform: Platforms = None,
    ) -> "Image":
        """Start from Prefect's official Debian image, or a plain Debian Python image.

        Args:
            python_version: ``(3, 12)`` or ``"3.12"``; the running Python's by default.
            prefect_version: the Prefect release to base on; the installed one by default
                (ignored with ``install_prefect=False``).
            install_prefect: ``True``: base on ``prefecthq/prefect:<version>-python<py>``
                (:func:`~prefect_flyimage.prefect_images.get_prefect_image_name`), which has
                Prefect installed. ``False``: base on a Debian Python image,
                ``python:<py>-slim-bookworm`` unless ``$PREFECT_FLYIMAGE_DEBIAN_BASE`` or
                ``debian_base`` in ``[tool.prefect-flyimage]`` names another
                (``{python_version}`` is replaced).
            registry: registry to push to.
            registry_secret: credentials for ``registry``: a
                :class:`~prefect_flyimage.credentials.RegistryCredentials`, a prefect-docker
                ``DockerRegistryCredentials`` block (or the name of a saved one), or a dict.
            name: repository name; :data:`DEFAULT_NAME` once layers are added.
            platform: target platform, ``"linux/amd64"`` by default.

        Without ``registry`` and ``name`` the result *is* the base image (its :attr:`uri`
        is the base's; nothing is built); with either it is a copy of it in ``registry``.
        """
        _checks.check_call("from_debian_base", locals())
        pv = _python_version(python_version)
        py = f"{pv[0]}.{pv[1]}"
        if install_prefect:
            base = get_prefect_image_name(prefect_version, py)
        else:
            template = config.load_settings().get("debian_base", env=config.ENV_PREFIX + "DEBIAN_BASE")
            base = (template or config.DEFAULT_DEBIAN_BASE).replace("{python_version}", py)
        return cls._new(
            base_image=base,
            registry=registry,
            name=name or DEFAULT_NAME,
            platform=_platforms(platform),
            python_version=pv,
            extendable=True,
            _cloned=bool(registry or name),
            _registry_secret=registry_secret,
        )

    @classmethod
    def from_base(cls, image_uri: str) -> "Image":
        """Start from an existing image ``<registry>/<name>:<tag>`` (it must exist in its registry).

        Unchanged, the image's :attr:`uri` is ``image_uri`` and nothing is built. To add
        layers, give the result a name first: ``Image.from_base(uri).clone(name="app")``.
        """
        _checks.check_call("from_base", locals())
        return cls._new(base_image=image_uri, extendable=True)

    @classmethod
    def from_ref_name(cls, name: str) -> "Image":
        """An image configured under a logical name (resolved when first needed).

        Looked up in ``$PREFECT_FLYIMAGE_IMAGE_<NAME>`` (upper-cased, other characters
        as ``_``), then in ``[tool.prefect-flyimage.images]`` of the nearest
        ``pyproject.toml`` with that table, from the current directory upwards. An unknown
        name makes :meth:`validate` (and :attr:`uri`) raise a :class:`SpecError` listing
        the known names. Layers added to it produce ``<registry>/<name>:<hash>``.
        """
        _checks.check_call("from_ref_name", locals())
        return cls._new(name=name, _ref_name=name, extendable=True)

    @classmethod
    def from_uv_script(
        cls,
        script: Union[Path, str],
        *,
        name: str,
        registry: Optional[str] = None,
        registry_secret: Any = None,
        python_version: Optional[PythonVersion] = None,
        index_url: Optional[str] = None,
        extra_index_urls: Urls = None,
        pre: bool = False,
        extra_args: Optional[str] = None,
        platform: Platforms = None,
        secret_mounts: SecretMounts = None,
    ) -> "Image":
        """A Debian Python image with the dependencies of a PEP 723 script installed.

        The script's ``# /// script`` block gives ``dependencies`` (installed with pip)
        and ``requires-python``, which picks the Python version unless
        ``python_version`` is given (the running Python if it satisfies it, else the
        newest supported one that does). Only the block enters the hash, and the script
        itself is not copied: add it with :meth:`with_source_file` or
        :meth:`with_code_bundle`. List ``prefect`` among the dependencies to run flows.

        Other arguments as for :meth:`from_debian_base` and :meth:`with_pip_packages`.
        """
        _checks.check_call("from_uv_script", locals())
        path = _absolute(script)
        if python_version is None:
            try:
                requires = config.read_script_metadata(path).requires_python
                chosen: PythonVersion = config.choose_python_version(requires, _current_python())
            except SpecError:
                chosen = _current_python()  # validate() reports the unreadable script
        else:
            chosen = python_version
        layer = UVScript(script=path, **_pip_options(index_url, extra_index_urls, pre, extra_args, secret_mounts))
        base = cls.from_debian_base(
            python_version=chosen, install_prefect=False, registry=registry,
            registry_secret=registry_secret, name=name, platform=platform,
        )
        return base.clone(addl_layer=layer)

    @classmethod
    def from_dockerfile(
        cls,
        file: Union[Path, str],
        registry: Optional[str] = None,
        name: Optional[str] = None,
        platform: Platforms = None,
    ) -> "Image":
        """An image built from a Dockerfile; its folder is the build context.

        The hash covers the Dockerfile's text and every file of its folder after that
        folder's ``.dockerignore``. The image is not extendable: put everything in the
        Dockerfile, or ``clone(extendable=True)`` to append layers after its last stage.
        """
        _checks.check_call("from_dockerfile", locals())
        return cls._new(
            dockerfile=_absolute(file), registry=registry, name=name,
            platform=_platforms(platform), extendable=False, _cloned=True,
        )

    def clone(
        self,
        registry: Optional[str] = None,
        registry_secret: Any = None,
        name: Optional[str] = None,
        base_image: Optional[str] = None,
        python_version: Optional[PythonVersion] = None,
        addl_layer: Optional[Layer] = None,
        extendable: Optional[bool] = None,
        platform: Platforms = None,
    ) -> "Image":
        """A copy with the given properties replaced and ``addl_layer`` appended.

        A clone is always an image of its own (built and pushed as
        ``<registry>/<name>:<hash>``), even without layers.
        """
        _checks.check_call("clone", locals())
        if addl_layer is not None and not isinstance(addl_layer, Layer):
            raise TypeError(f"addl_layer must be a Layer, not {type(addl_layer).__name__}")
        return self._replace(
            base_image=base_image or self.base_image,
            registry=registry or self.registry,
            name=name or self.name,
            python_version=_python_version(python_version) if python_version else self.python_version,
            extendable=self.extendable if extendable is None else extendable,
            platform=_platforms(platform) if platform else self.platform,
            _layers=self._layers + ((addl_layer,) if addl_layer is not None else ()),
            _ref_name=None if base_image else self._ref_name,
            _cloned=True,
            _registry_secret=self._registry_secret if registry_secret is None else registry_secret,
        )

    # ---- layers --------------------------------------------------------------------
    def with_workdir(self, workdir: str) -> "Image":
        """Set the working directory (an absolute path); later relative destinations are below it."""
        _checks.check_call("with_workdir", locals())
        return self.clone(addl_layer=WorkDir(workdir=workdir))

    def with_requirements(
        self,
        file: Union[str, Path],
        index_url: Optional[str] = None,
        extra_index_urls: Urls = None,
        pre: bool = False,
        extra_args: Optional[str] = None,
        secret_mounts: SecretMounts = None,
    ) -> "Image":
        """``pip install -r file`` (the file is bind-mounted, not copied into the image).

        Relative ``-r``/``-c`` includes inside the file are not supported. Not allowed
        together with :meth:`with_poetry_project`.

        Args:
            file: the requirements file.
            index_url: ``--index-url``; must not embed a password (see ``secret_mounts``).
            extra_index_urls: ``--extra-index-url`` values.
            pre: allow pre-releases.
            extra_args: more pip arguments, split like a shell would.
            secret_mounts: secrets for the step: names of environment variables of the
                building process, or :class:`~prefect_flyimage.plan.BuildSecret`. Each is
                mounted with BuildKit and exported to the step's commands as ``$<id>``
                (``secret_mounts=["PIP_INDEX_URL"]`` gives pip a private index).
        """
        _checks.check_call("with_requirements", locals())
        options = _pip_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        return self.clone(addl_layer=Requirements(file=_absolute(file), **options))

    def with_pip_packages(
        self,
        *packages: str,
        index_url: Optional[str] = None,
        extra_index_urls: Urls = None,
        pre: bool = False,
        extra_args: Optional[str] = None,
        secret_mounts: SecretMounts = None,
    ) -> "Image":
        """``pip install`` the given requirement specs (``"numpy>=2,<3"``; each shell-quoted).

        Options as for :meth:`with_requirements`. Uses a BuildKit cache mount for pip's cache.
        """
        _checks.check_call("with_pip_packages", locals())
        for p in packages:
            if not isinstance(p, str):
                raise TypeError(f"packages must be strings, not {type(p).__name__}; pass several as separate arguments")
        options = _pip_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        return self.clone(addl_layer=PipPackages(packages=tuple(packages), **options))

    def with_env_vars(self, env_vars: Mapping[str, str]) -> "Image":
        """Set environment variables (``ENV``); values may use earlier ones, e.g. ``"/x/bin:$PATH"``.

        Never put secrets here: ``ENV`` values are stored in the image. Use ``secret_mounts``.
        """
        _checks.check_call("with_env_vars", locals())
        return self.clone(addl_layer=Env(env_vars=tuple((str(k), str(v)) for k, v in env_vars.items())))

    def with_source_folder(self, src: Union[Path, str], dst: str = ".", copy_contents_only: bool = False) -> "Image":
        """Copy a local folder (after ``.dockerignore``, ``__pycache__`` excluded) into the image.

        Args:
            src: the folder.
            dst: destination in the image, relative to ``WORKDIR`` unless absolute.
            copy_contents_only: copy the folder's contents into ``dst`` instead of a folder
                named like ``src`` (only matters for the default ``dst="."``).
        """
        _checks.check_call("with_source_folder", locals())
        path = _absolute(src)
        if not copy_contents_only and dst == ".":
            dst = f"./{path.name}"
        return self.clone(addl_layer=SourceFolder(src=path, dst=dst))

    def with_source_file(self, src: Union[Path, str, Sequence[Union[Path, str]]], dst: str = ".") -> "Image":
        """Copy local file(s) into folder ``dst`` of the image (modes are kept)."""
        _checks.check_call("with_source_file", locals())
        items = [src] if isinstance(src, (str, Path)) else list(src)
        return self.clone(addl_layer=SourceFiles(srcs=tuple(_absolute(s) for s in items), dst=dst))

    def with_code_bundle(
        self,
        copy_style: Literal["loaded_modules", "all"] = "loaded_modules",
        dst: str = ".",
        root_dir: Union[Path, str, None] = None,
    ) -> "Image":
        """Copy the flow's source so a deployment's entrypoint runs inside the image.

        Prefect records a deployment's entrypoint relative to the current directory and
        runs it from the image's ``WORKDIR`` (``/opt/prefect`` in Prefect's images), so
        files keep their paths relative to ``root_dir`` (the current directory by
        default) below ``dst`` (``WORKDIR`` by default).

        Args:
            copy_style: ``"loaded_modules"``: the files of the modules loaded under
                ``root_dir`` at the time the image is hashed or built (the running script
                included) -- call it after importing your flows. ``"all"``: every file of
                ``root_dir``. Both skip VCS folders, virtualenvs, caches and
                ``.dockerignore`` matches.
            dst: destination folder in the image.
            root_dir: the project root; the current directory by default.

        A flow module that imports ``prefect_flyimage`` at top level needs it installed in
        the image too; import it under ``if __name__ == "__main__":`` instead.
        """
        _checks.check_call("with_code_bundle", locals())
        root = _absolute(root_dir if root_dir is not None else Path.cwd())
        return self.clone(addl_layer=CodeBundle(copy_style=copy_style, dst=dst, root_dir=root))

    def with_dockerignore(self, path: Union[Path, str]) -> "Image":
        """Apply a ``.dockerignore`` file's patterns to every folder this image copies.

        Patterns are matched relative to each copied folder; a folder's own
        ``.dockerignore`` applies too, after these.
        """
        _checks.check_call("with_dockerignore", locals())
        return self.clone(addl_layer=DockerIgnore(path=_absolute(path)))

    def with_uv_project(
        self,
        pyproject_file: Union[str, Path],
        uvlock: Union[Path, str, None] = None,
        index_url: Optional[str] = None,
        extra_index_urls: Urls = None,
        pre: bool = False,
        extra_args: Optional[str] = None,
        secret_mounts: SecretMounts = None,
        project_install_mode: Literal["dependencies_only", "install_project"] = "dependencies_only",
    ) -> "Image":
        """``uv sync`` a project into the image's Python (uv is not left in the image).

        Args:
            pyproject_file: the project's ``pyproject.toml``.
            uvlock: its lock; ``uv.lock`` next to ``pyproject_file`` if that exists. With a
                lock the sync is ``--locked`` (fails if the lock is out of date).
            project_install_mode: ``"dependencies_only"`` (only ``pyproject.toml`` and the
                lock enter the build, so code edits reuse the layer) or
                ``"install_project"`` (the project folder is built and installed too).
            extra_args: more ``uv sync`` arguments, e.g. ``"--no-dev"``.

        Other options as for :meth:`with_requirements`.
        """
        _checks.check_call("with_uv_project", locals())
        pyproject = _absolute(pyproject_file)
        lock = _absolute(uvlock) if uvlock is not None else None
        if lock is None and (pyproject.parent / "uv.lock").exists():
            lock = pyproject.parent / "uv.lock"
        options = _pip_options(index_url, extra_index_urls, pre, extra_args, secret_mounts)
        return self.clone(addl_layer=UVProject(
            pyproject=pyproject, uvlock=lock, project_install_mode=project_install_mode, **options,
        ))

    def with_poetry_project(
        self,
        pyproject_file: Union[str, Path],
        poetry_lock: Union[Path, str, None] = None,
        extra_args: Optional[str] = None,
        secret_mounts: SecretMounts = None,
        project_install_mode: Literal["dependencies_only", "install_project"] = "dependencies_only",
    ) -> "Image":
        """``poetry install`` a project (``--no-root`` unless ``project_install_mode="install_project"``).

        ``poetry_lock`` defaults to ``poetry.lock`` next to ``pyproject_file`` and must
        exist. Poetry runs from a throw-away virtualenv. Not allowed together with
        :meth:`with_requirements`, :meth:`with_uv_project` or :meth:`from_uv_script`.
        """
        _checks.check_call("with_poetry_project", locals())
        pyproject = _absolute(pyproject_file)
        lock = _absolute(poetry_lock) if poetry_lock is not None else pyproject.parent / "poetry.lock"
        return self.clone(addl_layer=PoetryProject(
            pyproject=pyproject, poetry_lock=lock, extra_args=extra_args,
            secret_mounts=as_secrets(secret_mounts), project_install_mode=project_install_mode,
        ))

    def with_apt_packages(self, *packages: str, secret_mounts: SecretMounts = None) -> "Image":
        """``apt-get install`` Debian packages (apt lists and archives in locked BuildKit cache mounts)."""
        _checks.check_call("with_apt_packages", locals())
        for p in packages:
            if not isinstance(p, str):
                raise TypeError(f"packages must be strings, not {type(p).__name__}; pass several as separate arguments")
        return self.clone(addl_layer=AptPackages(packages=tuple(packages), secret_mounts=as_secrets(secret_mounts)))

    def with_commands(self, commands: Union[str, Sequence[str]], secret_mounts: SecretMounts = None) -> "Image":
        """Run shell commands at build time, one ``RUN`` each (write them without ``RUN``)."""
        _checks.check_call("with_commands", locals())
        items = (commands,) if isinstance(commands, str) else tuple(commands)
        return self.clone(addl_layer=Commands(commands=items, secret_mounts=as_secrets(secret_mounts)))

    # ---- inspection ----------------------------------------------------------------
    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers, in order."""
        return self._layers

    @property
    def is_reference(self) -> bool:
        """True when this spec only names an existing image (nothing to build)."""
        return self.dockerfile is None and not self._layers and not self._cloned

    @property
    def resolved_base_image(self) -> Optional[str]:
        """:attr:`base_image`, or for :meth:`from_ref_name` images the configured URI."""
        if self._ref_name is not None and not self.base_image:
            return config.resolve_ref_name(self._ref_name)
        return self.base_image

    @property
    def effective_registry(self) -> Optional[str]:
        """:attr:`registry`, else ``$PREFECT_FLYIMAGE_REGISTRY`` / the configured ``registry``."""
        return self.registry or config.load_settings().get("registry", env=config.ENV_PREFIX + "REGISTRY")

    @property
    def repository(self) -> str:
        """``<registry>/<name>`` (just ``<name>`` without a registry); for references the base's name."""
        if self.is_reference:
            return ImageRef.parse(self.uri).name
        if not self.name:
            raise SpecError([self._no_name_problem()])
        registry = self.effective_registry
        return f"{registry.rstrip('/')}/{self.name}" if registry else self.name

    @property
    def tag(self) -> str:
        """The tag of :attr:`uri`: its plan's content tag."""
        return ImageRef.parse(self.uri).tag or "latest"

    @property
    def uri(self) -> str:
        """``<registry>/<name>:<hash>``; for an unchanged base or reference, that image's URI.

        Computed from the files' contents at each access (cheap: unchanged files are
        recognised by their ``stat``), so it always names the image a build would make now.

        Raises:
            SpecError: the spec is invalid (see :meth:`validate`).
        """
        self.validate()
        if self.is_reference:
            base = self.resolved_base_image
            assert base is not None  # validate() checked
            return base
        return str(self._plan().ref)

    @property
    def reference(self) -> str:
        """Same as :attr:`uri` (the attribute Prefect's ``deploy`` reads)."""
        return self.uri

    def _no_name_problem(self) -> str:
        return ("an image with layers needs a name for its URI: give name= to the constructor or "
                "call .clone(name='my-image') before adding layers")

    def __str__(self) -> str:
        try:
            return self.uri
        except FlyImageError:
            return repr(self)
