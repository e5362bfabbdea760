"""The example task services, in one app that ``controlplane up`` serves.

One :class:`~tasksdk.TaskApp` named ``controlplane-examples`` (its answers' ``source`` and its
NATS queue group) answers ``checknumber``, ``extract-metadata`` and ``geolookup``; see
:mod:`controlplane.examples.checknumber` and :mod:`controlplane.examples.photo` for their
inputs and outputs. ``APPS`` lists every app to serve, so a new example is added here.

``extract-metadata`` reads image paths only from its samples and from the folder named by
the environment variable ``CONTROLPLANE_EXAMPLES_IMAGE_DIR`` (read once, when this module is
imported), as a stand-alone task service reads its own configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.examples import checknumber, photo
from tasksdk import TaskApp

if TYPE_CHECKING:
    from collections.abc import Iterable

APP_NAME = "controlplane-examples"


def build_app(
    *, image_dirs: Iterable[Path] = (), geocoder: photo.Geocoder | None = None
) -> TaskApp:
    """Build the examples app; tests build their own with their folders and geocoder.

    Args:
        image_dirs: Folders besides the samples that ``extract-metadata`` may read images from.
        geocoder: The place lookup to use; a new one (loaded on first use) if not given.

    Returns:
        The app with all example tasks registered.
    """
    app = TaskApp(APP_NAME)
    app.task("checknumber")(checknumber.check_number)
    tasks = photo.PhotoTasks(photo.ImageSources(image_dirs), geocoder or photo.Geocoder())
    app.task("extract-metadata")(tasks.extract_metadata)
    app.task("geolookup")(tasks.geolookup)
    return app


def image_dirs_from_environment() -> tuple[Path, ...]:
    """The extra image folder from ``CONTROLPLANE_EXAMPLES_IMAGE_DIR``, if it is set.

    Returns:
        That folder, or nothing.
    """
    configured = os.environ.get(photo.IMAGE_DIR_VARIABLE, "").strip()
    return (Path(configured),) if configured else ()


app = build_app(image_dirs=image_dirs_from_environment())
APPS: tuple[TaskApp, ...] = (app,)
