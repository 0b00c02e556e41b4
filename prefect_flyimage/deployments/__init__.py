"""Deployment integrations: ``prefect.yaml`` steps (:mod:`prefect_flyimage.deployments.steps`).

Reference a step by its full path, as ``prefect deploy`` imports it::

    build:
      - prefect_flyimage.deployments.steps.build_docker_image:
          id: build-image
          requires: prefect-flyimage
          image_name: registry.example.com/team/app
"""

from __future__ import annotations

__all__: list[str] = []
