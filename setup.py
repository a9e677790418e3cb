"""Packaging for knowledge_retention.

The core (maths + evaluate adapter) needs only numpy and scipy; the layers that run models,
draw figures or serve the Space come as extras so that `pip install knowledge-retention`
stays light.  Install torch *before* the `extract` extra on CPU machines
(`pip install torch==2.13.0`), otherwise pip may resolve a multi-GB CUDA build.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

EXTRAS = {
    "torch": ["torch>=2.1"],
    "evaluate": ["evaluate>=0.4.1", "datasets>=2.14"],
    "extract": ["torch>=2.1", "transformers>=4.40", "accelerate>=0.26", "datasets>=2.14", "tqdm"],
    "report": ["matplotlib>=3.7", "scikit-learn>=1.3"],
    "app": ["gradio>=4.0", "matplotlib>=3.7", "safetensors>=0.4"],
    # image models of timm and torchvision (transformers' image models need only `extract` and Pillow)
    "vision": ["torchvision>=0.28", "timm>=1.0", "pillow>=10"],
    "test": [
        "pytest>=7",
        "hypothesis>=6",
        "scikit-learn>=1.3",
        "ruff>=0.4",
        "mypy>=1.8",
        "nbclient>=0.9",
        "nbformat>=5.9",
        "ipykernel>=6",
        "playwright>=1.40",
    ],
}
# `all` leaves torchvision/timm out: their PyPI wheels are built against CUDA torch (see the Makefile's
# install-vision); Pillow stays in (transformers' image processors need it).
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() for req in reqs if name != "vision"} | {"pillow>=10"})

setup(
    name="knowledge-retention",
    version="0.1.0",
    description="Knowledge Retention Score (KRS): how much of the teacher did a distilled student keep?",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["knowledge_retention", "knowledge_retention.*"]),
    package_data={"knowledge_retention": ["README.md", "requirements.txt", "py.typed"]},
    include_package_data=True,
    install_requires=["numpy>=1.23", "scipy>=1.9"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["knowledge-retention=knowledge_retention.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
