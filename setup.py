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


# The one release line on which all of these install and work together:
# tensorflow-compression 2.14.1 pins TensorFlow 2.14.
INSTALL_REQUIRES = [
    "tensorflow==2.14.1",
    "tensorflow-probability==0.22.1",
    "tensorflow-compression==2.14.1",
    "tensorflow-model-optimization==0.7.5",
    "keras-tuner>=1.4,<1.5",
    "numpy<2",
    "scikit-learn>=1.2",
    "matplotlib>=3.6",
]

DATA_REQUIRES = [
    "galsim>=2.4",
    # GalSim pulls the newest astropy, which needs numpy 2; TF 2.14 needs numpy < 2.
    "astropy<7",
    "scikit-learn>=1.2",
]

TEST_REQUIRES = [
    "pytest>=7",
    "pytest-xdist>=3",
    "scipy>=1.9",
    "scikit-learn>=1.2",
    "hypothesis>=6",
] + DATA_REQUIRES

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
    python_requires=">=3.9,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": TEST_REQUIRES,
        "data": DATA_REQUIRES,
        "gpu": ["tensorflow[and-cuda]==2.14.1"],
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
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
