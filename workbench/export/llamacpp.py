"""Where llama.cpp's pieces come from: the converter (`convert_hf_to_gguf.py`, with its own
`gguf-py`), the quantizer (a `llama-quantize` binary, or `llama_cpp.llama_model_quantize`) and
the runtime that proves a GGUF answers (`llama-cpp-python`).

`llama-cpp-python`'s source distribution vendors the whole of llama.cpp, converter included,
so one download gives all three. `python -m workbench.export.llamacpp` sets them up:
it keeps the sdist and the wheel built from it in ~/.cache/workbench (WORKBENCH_CACHE), unpacks
the sdist there (the converter is found in it afterwards), and installs the wheel, so a second
machine or CI run reuses the wheel instead of compiling llama.cpp again (about 20 minutes on
2 cores).

Pure Python at import: the CLI imports this before any work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SCRIPT = "convert_hf_to_gguf.py"
# The version the workbench is tested with (its vendored llama.cpp converts and quantizes
# the models the tests use); override with WORKBENCH_LLAMA_CPP_PYTHON.
VERSION = os.environ.get("WORKBENCH_LLAMA_CPP_PYTHON", "0.3.36")
COMMON_PLACES = ("~/llama.cpp", "~/src/llama.cpp", "~/git/llama.cpp", "/opt/llama.cpp",
                 "/usr/local/llama.cpp", "/usr/local/share/llama.cpp", "/usr/share/llama.cpp")
HOW_TO = ("GGUF needs llama.cpp's converter: `python -m workbench.export.llamacpp` fetches "
          "llama-cpp-python's source (which carries llama.cpp and its converter) and builds it; "
          "or `git clone https://github.com/ggml-org/llama.cpp`, `pip install -r "
          "llama.cpp/requirements/requirements-convert_hf_to_gguf.txt` and set "
          "LLAMA_CPP_DIR=/path/to/llama.cpp (or put convert_hf_to_gguf.py on PATH)")
INSTALL_RUNTIME = ("pip install '.[gguf]' (builds llama-cpp-python from source, ~20 minutes on "
                   "2 cores), or `python -m workbench.export.llamacpp` to build it once and "
                   "keep the wheel")


def cache_root() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", "~/.cache/workbench")).expanduser()


def wheel_dir() -> Path:
    return cache_root() / "wheels"


def source_dir(version: str = VERSION) -> Path:
    return cache_root() / f"llama-cpp-python-{version}"


def _source_trees() -> list[Path]:
    """llama.cpp trees inside llama-cpp-python sources: the one this module unpacks, any other
    unpacked version next to it, and a source checkout the package was installed from."""
    trees = [source_dir() / "vendor" / "llama.cpp"]
    root = cache_root()
    if root.is_dir():
        trees += sorted(root.glob("llama-cpp-python-*/vendor/llama.cpp"), reverse=True)
    if os.environ.get("LLAMA_CPP_PYTHON_SRC"):
        trees.insert(0, Path(os.environ["LLAMA_CPP_PYTHON_SRC"]).expanduser() / "vendor" / "llama.cpp")
    try:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        if spec and spec.origin:  # an editable / in-tree install keeps vendor/ beside the package
            trees.append(Path(spec.origin).resolve().parent.parent / "vendor" / "llama.cpp")
    except (ImportError, ValueError):
        pass
    return trees


def find_converter() -> Path | None:
    """LLAMA_CPP_DIR first, then PATH, then where people usually clone llama.cpp, then a
    llama-cpp-python source tree."""
    places = []
    if os.environ.get("LLAMA_CPP_DIR"):
        places.append(Path(os.environ["LLAMA_CPP_DIR"]).expanduser())
        if (places[0] / SCRIPT).is_file():
            return places[0] / SCRIPT
    on_path = shutil.which(SCRIPT)
    if on_path:
        return Path(on_path)
    places += [Path(p).expanduser() for p in COMMON_PLACES] + _source_trees()
    for place in places:
        if (place / SCRIPT).is_file():
            return place / SCRIPT
    return None


def find_quantize_binary() -> str | None:
    return shutil.which("llama-quantize")


def have_runtime() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


# ---- setup: `python -m workbench.export.llamacpp` --------------------------------------------

def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def fetch_source(version: str = VERSION) -> Path:
    """The sdist (kept in the wheel cache) unpacked into source_dir(): the converter lives there."""
    target = source_dir(version)
    if (target / "vendor" / "llama.cpp" / SCRIPT).is_file():
        return target
    wheels = wheel_dir()
    wheels.mkdir(parents=True, exist_ok=True)
    sdist = next(iter(wheels.glob(f"llama_cpp_python-{version}.tar.gz")), None)
    if sdist is None:
        _pip("download", "--no-deps", "--no-binary", ":all:", "-d", str(wheels),
             f"llama-cpp-python=={version}")
        sdist = wheels / f"llama_cpp_python-{version}.tar.gz"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(partial, filter="data")
    os.replace(partial / f"llama_cpp_python-{version}", target)
    shutil.rmtree(partial, ignore_errors=True)
    return target


def build_wheel(version: str = VERSION, log=print) -> Path:
    """Build llama-cpp-python's wheel from its sdist once; later calls reuse the cached wheel."""
    wheels = wheel_dir()
    built = sorted(wheels.glob(f"llama_cpp_python-{version}-*.whl"))
    if built:
        return built[-1]
    source = fetch_source(version)
    env = dict(os.environ)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    # Only the library the bindings load: no multimodal (llava / mtmd), tests or examples.
    env.setdefault("CMAKE_ARGS", "-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF "
                                 "-DLLAMA_BUILD_EXAMPLES=OFF")
    log(f"building llama-cpp-python {version} from source (compiles llama.cpp; about 20 "
        f"minutes on 2 cores); the wheel is kept in {wheels}")
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels),
                    str(source)], check=True, env=env)
    log(f"built in {time.monotonic() - start:.0f} s")
    return sorted(wheels.glob(f"llama_cpp_python-{version}-*.whl"))[-1]


NEXT = ("next: export a finished run as GGUF, proven by llama.cpp: `workbench export RUN "
        "--format gguf --quant q4_K_M` (`workbench runs` lists the runs)")


def setup(version: str = VERSION, log=print) -> None:
    source = fetch_source(version)
    log(f"converter: {source / 'vendor' / 'llama.cpp' / SCRIPT}")
    if not have_runtime():
        wheel = build_wheel(version, log)
        _pip("install", str(wheel))
    # The converter's own requirements that the workbench does not already have.
    _pip("install", "sentencepiece>=0.1.98,<0.3", "protobuf>=4.21")
    log(f"llama.cpp is ready (llama-cpp-python {version})")
    log(NEXT)  # minutes of compiler output above: the last line says what to do now


def main(argv: list[str] | None = None) -> int:
    # A parser even with no options: `--help` must print help, never start a 20-minute build.
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m workbench.export.llamacpp",
        description=f"Set up llama.cpp for GGUF export: fetch llama-cpp-python {VERSION}'s source "
                    f"(it carries llama.cpp and its converter) into {source_dir()}, build its wheel "
                    f"once (about 20 minutes on 2 cores; kept in {wheel_dir()}) and install it.",
        epilog=NEXT.replace("next: ", "Then: "))
    parser.parse_args(argv)
    setup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
