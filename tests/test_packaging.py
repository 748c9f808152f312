"""The package as pip builds it: metadata (license, one version, dependencies and their platforms) and the files
a wheel must carry (py.typed, the CUDA sources, LICENSE, the console command)."""

import email.parser
import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import fusedrnn

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Linux machines NVIDIA ships cuda-core / cuda-bindings / NVRTC wheels for
CUDA_MARKER = 'platform_system == "Linux" and (platform_machine == "x86_64" or platform_machine == "aarch64")'


def _setuptools_version() -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        return (0,)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the tree (building in place would leave build/ behind)."""
    if _setuptools_version() < (77,):
        pytest.skip("building needs setuptools >= 77 (PEP 639 license metadata)")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fusedrnn", src / "fusedrnn", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (path,) = out.glob("fusedrnn-*.whl")
    return zipfile.ZipFile(path)


def _metadata(wheel: zipfile.ZipFile):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_wheel_carries_types_sources_license_and_command(wheel):
    names = set(wheel.namelist())
    cuda_sources = {f"fusedrnn/backends/cuda/{p.name}" for p in (ROOT / "fusedrnn/backends/cuda").glob("*.cu*")}
    assert len(cuda_sources) > 1 and {"fusedrnn/py.typed", *cuda_sources} <= names  # every kernel source and header
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert wheel.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "[console_scripts]\nfusedrnn = fusedrnn.cli:main" in entry_points


def test_metadata_license_version_and_dependencies(wheel):
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert "License" not in meta  # the deprecated free-text field
    assert meta["Version"] == fusedrnn.__version__  # the one place the version is written
    requires = meta.get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    names = {r.split(";")[0].split(">")[0].split("=")[0].strip() for r in base}
    assert names == {
        "torch",
        "numpy",
        "matplotlib",
        "cuda-core",
        "cuda-bindings",
        "cuda-pathfinder",
        "nvidia-cuda-nvrtc",
    }
    for requirement in base:  # the NVRTC pieces only where NVIDIA publishes wheels; no CUDA runtime or cuDNN
        if requirement.startswith(("cuda-", "nvidia-")):
            assert requirement.split(";")[1].strip() == CUDA_MARKER, requirement
    assert not any(r.startswith(("nvidia-cudnn", "nvidia-cublas", "nvidia-cuda-runtime")) for r in requires)


def test_license_file_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "fusedrnn contributors" in text
