"""Package metadata for localsgd: comm (all-reduce), sim (simulator), train (trainer), analysis (plots)."""
from setuptools import find_packages, setup

setup(
    name="localsgd",
    version="0.1.0",
    description="Local SGD trainer over our own MPI all-reduce, and a communication-cost simulator",
    python_requires=">=3.11",
    packages=find_packages(include=["comm", "comm.*", "sim", "sim.*", "train", "train.*",
                                    "analysis", "analysis.*", "cluster", "cluster.*", "atomicio"]),
    package_data={"comm": ["py.typed"], "sim": ["py.typed", "presets/*.json"], "train": ["py.typed"],
                  "analysis": ["py.typed"], "cluster": ["py.typed"]},
    install_requires=[
        "mpi4py>=4",
        "numpy",
        "scipy",
        "simpy",
        "matplotlib",
        "tqdm",
        "torch>=2.1",
    ],
    extras_require={
        # The mpich wheel puts mpirun and libmpi inside the virtual environment.
        "mpich": ["mpich"],
        # Linters pinned: a new release may add findings; `make lint` runs both before the suite.
        "test": ["pytest>=7", "pytest-timeout", "ruff==0.17.6", "mypy==2.4.1"],
    },
)
