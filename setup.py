"""Package discovery, the one thing pyproject.toml cannot say here: the source folders are
`worker/` and `plugins/`, installed as `ecs_worker` and `ecs_worker.plugins`, so every package
below them is found and renamed by prefix. A new folder with an `__init__.py` is in the next
wheel without an edit anywhere (tests/test_wheel.py builds one to prove it)."""
from setuptools import find_packages, setup

ROOTS = {"ecs_worker": "worker", "ecs_worker.plugins": "plugins"}  # package -> folder

setup(package_dir=ROOTS,
      packages=sorted({*ROOTS, *(f"{package}.{found}" for package, folder in ROOTS.items()
                                 for found in find_packages(folder))}))
