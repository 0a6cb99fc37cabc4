"""Packaging for keras_efficient."""

import os
import re

from setuptools import find_packages, setup

_HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(_HERE, "keras_efficient", "version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def _long_description():
    with open(os.path.join(_HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


# Two supported release lines, one codebase (README, "Supported stacks"):
# - the current line, installed by default: TensorFlow >= 2.16 with tf-keras (the Keras 2
#   API, which TensorFlow Probability and tensorflow-model-optimization still need),
#   tested on TensorFlow 2.21;
# - the 2.14 line: `pip install -e ".[tf214]" -c constraints/tf2.14.txt` (TensorFlow 2.14.1
#   with its built-in Keras 2, and tensorflow-compression 2.14.1 as the GDN reference).
INSTALL_REQUIRES = [
    "tensorflow>=2.14.1,!=2.15.*",
    "tf-keras>=2.14.1",
    "tensorflow-probability>=0.22.1",
    "tensorflow-model-optimization>=0.7.5",
    "keras-tuner>=1.4.6,<1.5",
    # keras-tuner imports tensorboard's protos; TensorFlow >= 2.21 no longer pulls it in.
    "tensorboard",
    "numpy",
    "scikit-learn>=1.2",
]

# Plots of the experiments (`keras-efficient reproduce ...`); the layers do not need it.
EXPERIMENTS_REQUIRES = [
    "matplotlib>=3.6",
]

DATA_REQUIRES = [
    "galsim>=2.4",
    "scikit-learn>=1.2",
]

TEST_REQUIRES = [
    "pytest>=7",
    "pytest-xdist>=3",
    "scipy>=1.9",
    "scikit-learn>=1.2",
    "hypothesis>=6",
] + DATA_REQUIRES + EXPERIMENTS_REQUIRES

setup(
    name="keras_efficient",
    version=_version(),
    description=(
        "Efficient deep learning in Keras: adaptive-dropout pruning, ReBEL split "
        "computing, E2-Train energy-efficient training, and probabilistic heads "
        "for GPUs and IPUs."
    ),
    long_description=_long_description(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["keras_efficient", "keras_efficient.*"]),
    python_requires=">=3.9,<3.14",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": TEST_REQUIRES,
        "data": DATA_REQUIRES,
        "experiments": EXPERIMENTS_REQUIRES,
        # The current line's CUDA wheels (Linux): `pip install -e ".[gpu]"`.
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        # The 2.14 line, with constraints/tf2.14.txt: the GDN reference implementation.
        "tf214": ["tensorflow-compression==2.14.1"],
        "docs": ["mkdocs>=1.5"],
    },
    entry_points={
        "console_scripts": ["keras-efficient=keras_efficient.cli.main:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
