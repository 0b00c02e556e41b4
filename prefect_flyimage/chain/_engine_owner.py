"""The lazily made :class:`~prefect_flyimage.engine.Engine` of a tree or of one image.

:class:`~prefect_flyimage.chain.builder.DockerBuilder` and
:class:`~prefect_flyimage.chain.fsm.ImageFSM` both take a docker-py ``client`` or an
``engine``: the one they were given is the caller's, the one they make is theirs to close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import docker

    from ..engine import Engine

__all__ = ["EngineOwner"]


class EngineOwner:
    """Supplies :attr:`engine` (made from ``self._client`` on first use unless ``self._engine``
    was given) and :meth:`close` (closes only an engine made here)."""

    _client: Optional["docker.DockerClient"]
    _engine: Optional["Engine"]

    @property
    def engine(self) -> "Engine":
        """The Docker engine: the one given, else one wrapping the client given (or the
        environment's); a builder's images share the builder's."""
        if self._engine is None:
            from ..engine import Engine

            self._engine = self._own_engine = Engine(client=self._client)
        return self._engine

    def close(self) -> None:
        """Close the engine if this object made it (a given or shared engine is its owner's)."""
        own, self._own_engine = getattr(self, "_own_engine", None), None
        if own is not None:
            own.close()
            if self._engine is own:
                self._engine = None
