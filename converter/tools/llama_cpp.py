"""The peer a user would pick for a GGUF model: llama.cpp, built here from pinned sources, and its `llama-bench`.

Model hubs and GitHub are unreachable here, but PyPI is not: the sdist of
`llama-cpp-python==0.3.36` carries the llama.cpp sources under
`vendor/llama.cpp` (ggml-org/llama.cpp@0c1e57098, a shallow submodule). So:

- `build_llama_cpp()` runs `pip download --no-deps --no-binary :all:` for that
  sdist, checks its sha256 against a pin, unpacks `vendor/llama.cpp` into
  `<build_dir>/llama.cpp/src` and builds `llama-bench`, `llama-quantize`,
  `llama-perplexity`, `llama-cli` and `llama-completion` with CMake into
  `<build_dir>/llama.cpp/build/bin` (about 15 minutes on 2 cores). A stamp
  records the sdist's sha256, the CMake options and the targets; a build that
  matches is reused at once. An sdist copied into `<build_dir>/llama.cpp/` by
  hand is used without downloading.
- `requantize()` turns the Q4_1 SmolLM2 GGUF (or any GGUF) into Q8_0 or Q4_0
  with `llama-quantize --allow-requantize`, into
  `<build_dir>/<model>/<model>_<kind>.gguf`, with a JSON record beside it.
  Requantizing starts from Q4_1 weights: a Q8_0 made this way is a speed
  baseline for that format, not an accuracy one (it keeps Q4_1's error).
- `bench()` runs `llama-bench -o json` and returns a `LlamaBenchResult`: tokens
  per second per test (`pp<N>` prefill, `tg<N>` generation) and thread count,
  with the build llama-bench reports (commit, CPU, backends) and the exact
  command.

The vendored llama.cpp (0.5.0-dev) no longer has `LLAMA_CURL` (it is ignored);
what could reach the network is switched off instead: `LLAMA_USE_PREBUILT_UI`
(downloads the server's web UI from a Hugging Face bucket at build time; on by
default), `LLAMA_BUILD_UI` (npm), `LLAMA_LLGUIDANCE` (cargo) and `LLAMA_OPENSSL`
(HTTPS model downloads at run time). `llama-cli` is now a chat client built on
the server code, so `LLAMA_BUILD_SERVER` stays on; `llama-completion` is the
one-shot text tool. On x86-64, ggml's AMX kernels are left out
(`NO_AMX_FLAGS`): with them, every prefill crashes on this machine kind. The
commit is passed in (`LLAMA_BUILD_COMMIT`) because the unpacked tree has no
git metadata, and git is kept from finding the project's own repository
around it.

Nothing here imports more than the standard library and `converter.common`;
`converter.models.smollm2` is imported only when no source GGUF is given.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from converter.common import files
from converter.common import progress as progress_lib

TAG = "llama.cpp"

# The pinned source: the llama-cpp-python sdist on PyPI and the llama.cpp commit it vendors.
SDIST_REQUIREMENT = "llama-cpp-python==0.3.36"
SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDOR_PREFIX = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
# `.git/modules/vendor/llama.cpp/HEAD` in the sdist; its CHANGELOG says ggml-org/llama.cpp@0c1e57098.
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
LLAMA_CPP_SHORT_COMMIT = LLAMA_CPP_COMMIT[:7]

# `-DLLAMA_CURL=OFF` is not here: this llama.cpp ignores LLAMA_CURL. See the module docstring.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DGGML_CCACHE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_LLGUIDANCE=OFF",
    "-DLLAMA_OPENSSL=OFF",
    f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_SHORT_COMMIT}",
    # The sdist's git history is shallow: the build number is unknown.
    "-DLLAMA_BUILD_NUMBER=0",
)
# x86-64 only: GGML_NATIVE compiles ggml's AMX kernels on CPUs that have AMX (Sapphire Rapids and later),
# and on this machine kind (a 2-core KVM Xeon with AMX) every prefill of SmolLM2 then crashes in
# `ggml_backend_amx_mul_mat` (SIGSEGV at `ldtilecfg`; ggml-org/llama.cpp#20824, open), though AMX itself
# works here. Without AMX, ggml uses its AVX-512 VNNI kernels. Pass `-DCMAKE_C_FLAGS=` and
# `-DCMAKE_CXX_FLAGS=` in extra_cmake_options to build with AMX again.
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
X86_64_CMAKE_OPTIONS = (f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}", f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}")
TARGETS = ("llama-bench", "llama-quantize", "llama-perplexity", "llama-cli", "llama-completion")
MIN_CMAKE_VERSION = (3, 15)  # llama.cpp needs 3.14; several --target at once need 3.15

QUANT_KINDS = ("Q8_0", "Q4_0")
DEFAULT_MODEL_NAME = "smollm2-135m"

STAMP_FILE = "build-stamp.json"
SOURCE_STAMP_FILE = ".llama-cpp-source.json"
BUILD_LOG_FILE = "build.log"

_PIP_TIMEOUT_SECONDS = 900
_TAIL_LINES = 40
_C_COMPILERS = ("cc", "gcc", "clang")
_CXX_COMPILERS = ("c++", "g++", "clang++")


def llama_cpp_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`<build_dir>/llama.cpp`: the sources (`src`), the CMake build (`build`) and a hand-copied sdist."""
    return pathlib.Path(build_dir) / "llama.cpp"


def source_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`<build_dir>/llama.cpp/src`: the unpacked `vendor/llama.cpp` of the sdist."""
    return llama_cpp_dir(build_dir) / "src"


def cmake_build_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`<build_dir>/llama.cpp/build`: CMake's binary folder, with the stamp and the build log."""
    return llama_cpp_dir(build_dir) / "build"


def bin_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`<build_dir>/llama.cpp/build/bin`: where the programs go, whether or not they are built yet."""
    return cmake_build_dir(build_dir) / "bin"


def cmake_options(*, extra_cmake_options: Sequence[str] = (), machine: str | None = None) -> tuple[str, ...]:
    """The CMake options of a build: `CMAKE_OPTIONS`, `X86_64_CMAKE_OPTIONS` on x86-64, then the caller's own.

    Args:
      extra_cmake_options: Options to add; a later `-D` of the same name wins.
      machine: `platform.machine()` of the build host; None is this one.
    """
    extra = tuple(extra_cmake_options)
    for option in extra:
        if not option.startswith("-"):
            raise ValueError(f"CMake option {option!r} does not start with '-' (e.g. '-DGGML_NATIVE=OFF').")
    machine = platform.machine() if machine is None else machine
    per_machine = X86_64_CMAKE_OPTIONS if machine.lower() in ("x86_64", "amd64") else ()
    return CMAKE_OPTIONS + per_machine + extra


def read_build_stamp(build_dir: str | os.PathLike = "build") -> dict[str, Any] | None:
    """The stamp of the last build in `build_dir` (sdist sha256, CMake options, targets, times), or None."""
    path = cmake_build_dir(build_dir) / STAMP_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_built(
    *,
    build_dir: str | os.PathLike = "build",
    targets: Sequence[str] = TARGETS,
    extra_cmake_options: Sequence[str] = (),
) -> bool:
    """True if a finished build of the pinned sources with these options has every target's program."""
    stamp = read_build_stamp(build_dir)
    if (
        not stamp
        or not stamp.get("complete")
        or not _same_key(stamp, cmake_options(extra_cmake_options=extra_cmake_options))
    ):
        return False
    folder = bin_dir(build_dir)
    return all(_is_executable(folder / name) for name in targets)


def check_build_tools(*, env: Mapping[str, str] | None = None) -> None:
    """Checks that CMake (new enough), a C and a C++ compiler and the build tool are on PATH.

    Args:
      env: the environment to look in (PATH, CC, CXX, CMAKE_GENERATOR); None is this process's.

    Raises:
      FileNotFoundError: something is missing; the message names everything missing and how to install it.
    """
    env = os.environ if env is None else env
    path = env.get("PATH", "")
    missing = []
    cmake = shutil.which("cmake", path=path)
    if cmake is None:
        missing.append("cmake (3.15 or newer)")
    else:
        version = _cmake_version(cmake)
        if version is not None and version < MIN_CMAKE_VERSION:
            missing.append(f"cmake 3.15 or newer ({cmake} is {'.'.join(map(str, version))})")
    for what, variable, candidates in (
        ("a C compiler", "CC", _C_COMPILERS),
        ("a C++ compiler", "CXX", _CXX_COMPILERS),
    ):
        chosen = env.get(variable, "").split()
        if chosen:
            if shutil.which(chosen[0], path=path) is None:
                missing.append(f"{what} ({variable}={env[variable]!r} is not on PATH)")
        elif not any(shutil.which(name, path=path) for name in candidates):
            missing.append(f"{what} ({', '.join(candidates[:-1])} or {candidates[-1]})")
    generator = env.get("CMAKE_GENERATOR", "Unix Makefiles")
    tool = "ninja" if "ninja" in generator.lower() else "make" if "makefile" in generator.lower() else None
    if tool and shutil.which(tool, path=path) is None:
        missing.append(f"{tool} (for CMake's {generator!r} generator)")
    if missing:
        raise FileNotFoundError(
            f"Building llama.cpp needs {'; '.join(missing)}, not found on PATH. Install them "
            "(Debian/Ubuntu: apt-get install cmake build-essential) and run again; nothing was downloaded or built."
        )


def build_llama_cpp(
    *,
    build_dir: str | os.PathLike = "build",
    targets: Sequence[str] = TARGETS,
    extra_cmake_options: Sequence[str] = (),
    jobs: int | None = None,
    download: bool = True,
    progress: bool = True,
) -> pathlib.Path:
    """Builds llama.cpp's programs from the pinned sdist, or returns the folder of a matching build.

    A second call returns at once when the stamp in `<build_dir>/llama.cpp/build`
    records the pinned sdist sha256, the same CMake options and a finished
    build, and every target's program exists. Otherwise the tools are checked
    first (nothing happens if one is missing), the sources are unpacked if
    needed (from a hand-copied sdist in `<build_dir>/llama.cpp/`, or one
    downloaded with pip), and CMake configures and builds. A build with other
    options or sources starts from an empty CMake folder; an interrupted one
    with the same options resumes.

    Args:
      build_dir: The project's build folder.
      targets: The CMake targets (programs) to build.
      extra_cmake_options: Options after `cmake_options()`'s (e.g. `-DGGML_NATIVE=OFF` for a portable build).
      jobs: Parallel compile jobs; None is the number of CPUs.
      download: Allow downloading the sdist; False raises if it is needed.
      progress: Log progress to the console.

    Returns:
      The folder with the programs, `<build_dir>/llama.cpp/build/bin`.

    Raises:
      FileNotFoundError: cmake, a compiler or the build tool is missing, or the
        sdist is needed and cannot be had; the message says what to do.
      ValueError: an sdist found differs from the pinned one.
      RuntimeError: CMake failed; the message has the end of its output and
        the whole of it is in `<build_dir>/llama.cpp/build/build.log`.
    """
    options = cmake_options(extra_cmake_options=extra_cmake_options)
    targets = tuple(targets)
    if not targets:
        raise ValueError("Pass at least one target, e.g. targets=('llama-bench',).")
    folder = bin_dir(build_dir)
    if is_built(build_dir=build_dir, targets=targets, extra_cmake_options=extra_cmake_options):
        progress_lib.log(TAG, f"using the build in {folder}", enabled=progress)
        return folder
    check_build_tools()
    started = time.perf_counter()
    sources = _unpack_sources(build_dir, download=download, progress=progress)
    build = cmake_build_dir(build_dir)
    stamp = read_build_stamp(build_dir)
    if build.exists() and (stamp is None or not _same_key(stamp, options)):
        progress_lib.log(TAG, f"removing {build}: it was configured with other sources or options", enabled=progress)
        shutil.rmtree(build)
    built_before = tuple(stamp.get("targets", ())) if stamp and _same_key(stamp, options) else ()
    all_targets = tuple(dict.fromkeys(built_before + targets))
    build.mkdir(parents=True, exist_ok=True)
    record = {
        "complete": False,
        "sdist": SDIST_NAME,
        "sdist_sha256": SDIST_SHA256,
        "source": f"PyPI {SDIST_REQUIREMENT} sdist, vendor/llama.cpp",
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "cmake_options": list(options),
        "targets": list(built_before),
    }
    files.write_atomically(build / STAMP_FILE, json.dumps(record, indent=2) + "\n")
    env = _build_env(build_dir)
    configure = ["cmake", "-S", str(sources), "-B", str(build), *options]
    compile_ = ["cmake", "--build", str(build), "--config", "Release", "--target", *all_targets]
    compile_ += ["-j", str(jobs or os.cpu_count() or 1)]
    log_lines: list[str] = []
    try:
        progress_lib.log(TAG, f"configuring: {shlex.join(configure)}", enabled=progress)
        _run_logged(configure, env=env, log_lines=log_lines, progress=progress, step="configure")
        progress_lib.log(
            TAG,
            f"building {', '.join(all_targets)} (about 15 minutes on 2 cores): {shlex.join(compile_)}",
            enabled=progress,
        )
        _run_logged(compile_, env=env, log_lines=log_lines, progress=progress, step="build")
    finally:
        files.write_atomically(build / BUILD_LOG_FILE, "".join(log_lines))
    absent = [name for name in all_targets if not _is_executable(folder / name)]
    if absent:
        raise RuntimeError(f"CMake succeeded but {', '.join(absent)} is not in {folder}; see {build / BUILD_LOG_FILE}.")
    seconds = time.perf_counter() - started
    record.update(
        complete=True,
        targets=list(all_targets),
        configure_command=configure,
        build_command=compile_,
        build_seconds=round(seconds, 1),
        compiler=_compiler_line(build),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
    )
    files.write_atomically(build / STAMP_FILE, json.dumps(record, indent=2) + "\n")
    progress_lib.log(TAG, f"built {', '.join(all_targets)} in {seconds / 60:.1f} min into {folder}", enabled=progress)
    return folder


def _same_key(stamp: Mapping[str, Any], options: Sequence[str]) -> bool:
    return stamp.get("sdist_sha256") == SDIST_SHA256 and list(stamp.get("cmake_options", ())) == list(options)


def _is_executable(path: pathlib.Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _cmake_version(cmake: str) -> tuple[int, int] | None:
    try:
        output = subprocess.run([cmake, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version (\d+)\.(\d+)", output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _build_env(build_dir: str | os.PathLike) -> dict[str, str]:
    """This process's environment, with git kept inside the unpacked tree.

    The tree has no `.git`; without a ceiling, llama.cpp's CMake would ask git
    and get the commit of whatever repository holds the build folder.
    """
    env = {key: value for key, value in os.environ.items() if key not in ("GIT_DIR", "GIT_WORK_TREE")}
    env["GIT_CEILING_DIRECTORIES"] = str(llama_cpp_dir(build_dir).resolve())
    return env


def _run_logged(
    command: Sequence[str], *, env: Mapping[str, str], log_lines: list[str], progress: bool, step: str
) -> None:
    """Runs a CMake step, keeping its output and logging every tenth of the way of a build."""
    log_lines.append(f"$ {shlex.join(command)}\n")
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    reported = -1
    with subprocess.Popen(
        list(command), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            log_lines.append(line)
            tail.append(line.rstrip("\n"))
            done = _percent_done(line)
            if done is not None and done // 10 > reported:
                reported = done // 10
                progress_lib.log(TAG, f"{step}: {done} %", enabled=progress)
        returncode = process.wait()
    if returncode != 0:
        raise RuntimeError(
            f"CMake {step} failed (exit {returncode}): {shlex.join(command)}\n"
            + "\n".join(tail)
            + "\n(the whole output "
            f"is in the build log, {BUILD_LOG_FILE} in the CMake folder)"
        )


def _percent_done(line: str) -> int | None:
    """How far a build is from a Makefile `[ 42%]` or a Ninja `[12/345]` line."""
    match = re.match(r"\[\s*(\d+)%\]", line)
    if match:
        return int(match.group(1))
    match = re.match(r"\[(\d+)/(\d+)\]", line)
    if match and int(match.group(2)):
        return 100 * int(match.group(1)) // int(match.group(2))
    return None


def _compiler_line(build: pathlib.Path) -> str:
    """`CMAKE_CXX_COMPILER` and its version from CMake's cache, for the stamp."""
    try:
        cache = (build / "CMakeCache.txt").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "unknown"
    match = re.search(r"^CMAKE_CXX_COMPILER:\w+=(.*)$", cache, re.M)
    compiler = match.group(1) if match else ""
    if not compiler:
        return "unknown"
    try:
        first = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False)
        return first.stdout.splitlines()[0] if first.stdout else compiler
    except (OSError, subprocess.TimeoutExpired):
        return compiler


def _unpack_sources(build_dir: str | os.PathLike, *, download: bool, progress: bool) -> pathlib.Path:
    """`<build_dir>/llama.cpp/src` from the pinned sdist, unpacked once and moved into place whole."""
    sources = source_dir(build_dir)
    stamp_path = sources / SOURCE_STAMP_FILE
    if stamp_path.is_file():
        try:
            recorded = json.loads(stamp_path.read_text(encoding="utf-8")).get("sdist_sha256")
        except json.JSONDecodeError:
            recorded = None
        if recorded == SDIST_SHA256:
            return sources
    folder = llama_cpp_dir(build_dir)
    folder.mkdir(parents=True, exist_ok=True)
    by_hand = folder / SDIST_NAME
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        if by_hand.is_file():
            sdist = by_hand
            progress_lib.log(TAG, f"using {sdist}", enabled=progress)
        elif not download:
            raise FileNotFoundError(_missing_sdist_message(folder, "downloading is off"))
        else:
            sdist = _download_sdist(pathlib.Path(scratch), folder, progress=progress)
        actual = files.sha256_of(sdist)
        if actual != SDIST_SHA256:
            fix = (
                f"Delete {sdist} and run again to download it anew."
                if sdist == by_hand
                else "PyPI served another file."
            )
            raise ValueError(
                f"{sdist.name} is not the pinned {SDIST_REQUIREMENT} sdist (sha256 {actual}, expected {SDIST_SHA256}). "
                + fix
            )
        progress_lib.log(
            TAG, f"unpacking vendor/llama.cpp (commit {LLAMA_CPP_SHORT_COMMIT}) into {sources}", enabled=progress
        )
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".src-", suffix=".tmp", dir=folder))
        try:
            staging.chmod(0o755)
            _extract_vendor(sdist, staging)
            record = {
                "sdist": SDIST_NAME,
                "sdist_sha256": SDIST_SHA256,
                "source": f"PyPI {SDIST_REQUIREMENT}, vendor/llama.cpp",
                "llama_cpp_commit": LLAMA_CPP_COMMIT,
            }
            files.write_atomically(staging / SOURCE_STAMP_FILE, json.dumps(record, indent=2) + "\n")
            files.replace_folder(staging, sources)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sources


def _missing_sdist_message(folder: pathlib.Path, reason: str) -> str:
    return (
        f"The llama.cpp sources ({SDIST_NAME}) are not in {folder} and could not be fetched ({reason}). Where PyPI "
        f"is reachable, run `pip download --no-deps --no-binary :all: {SDIST_REQUIREMENT} -d {folder}` and run again."
    )


def _download_sdist(scratch: pathlib.Path, folder: pathlib.Path, *, progress: bool) -> pathlib.Path:
    """Downloads the pinned sdist into `scratch` with this interpreter's pip; returns its path."""
    progress_lib.log(TAG, f"downloading the {SDIST_REQUIREMENT} sdist (77 MB) from PyPI with pip", enabled=progress)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(scratch),
        SDIST_REQUIREMENT,
    ]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FileNotFoundError(_missing_sdist_message(folder, f"pip did not run: {error}")) from error
    downloaded = scratch / SDIST_NAME
    if finished.returncode != 0 or not downloaded.is_file():
        tail = " ".join((finished.stderr or finished.stdout or "no output").strip().splitlines()[-2:])
        raise FileNotFoundError(_missing_sdist_message(folder, f"pip download failed: {tail}"))
    return downloaded


def _extract_vendor(sdist: pathlib.Path, destination: pathlib.Path) -> None:
    """Extracts `vendor/llama.cpp` of the sdist into `destination`, without its `.git` link."""

    def vendor_only(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if not member.name.startswith(VENDOR_PREFIX):
            return None
        relative = member.name[len(VENDOR_PREFIX) :]
        if not relative or relative == ".git":
            return None
        return tarfile.data_filter(member.replace(name=relative, deep=False), path)

    with tarfile.open(sdist, "r:gz") as archive:
        archive.extractall(destination, filter=vendor_only)
    if not (destination / "CMakeLists.txt").is_file():
        raise ValueError(f"{sdist} has no {VENDOR_PREFIX}CMakeLists.txt; it is not the pinned {SDIST_REQUIREMENT}.")


def _program(
    name: str, *, programs: str | os.PathLike | None, build_dir: str | os.PathLike, progress: bool
) -> tuple[pathlib.Path, dict[str, Any]]:
    """A llama.cpp program (built in `build_dir` if `programs` is None) and where it came from."""
    folder = build_llama_cpp(build_dir=build_dir, progress=progress) if programs is None else pathlib.Path(programs)
    program = folder / name
    if not _is_executable(program):
        raise FileNotFoundError(f"No {name} program in {folder}.")
    # A folder of ours has the stamp one level up (`<build_dir>/llama.cpp/build/{bin,build-stamp.json}`).
    try:
        stamp = json.loads((folder.parent / STAMP_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        stamp = {}
    origin: dict[str, Any] = {"programs": str(folder)}
    for key in ("source", "sdist", "sdist_sha256", "llama_cpp_commit", "cmake_options", "compiler"):
        if key in stamp:
            origin[key] = stamp[key]
    return program, origin


# --- requantizing -------------------------------------------------------------------------------------------


def requantized_path(
    kind: str, *, build_dir: str | os.PathLike = "build", model_name: str = DEFAULT_MODEL_NAME
) -> pathlib.Path:
    """`<build_dir>/<model>/<model>_<kind>.gguf`, e.g. `build/smollm2-135m/smollm2-135m_Q8_0.gguf`."""
    return pathlib.Path(build_dir) / model_name / f"{model_name}_{_check_kind(kind)}.gguf"


def _check_kind(kind: str) -> str:
    normalized = str(kind).upper()
    if normalized not in QUANT_KINDS:
        raise ValueError(f"Unsupported quantization {kind!r}; choose one of {', '.join(QUANT_KINDS)}.")
    return normalized


def requantize(
    source_gguf: str | os.PathLike | None = None,
    kind: str = "Q8_0",
    *,
    build_dir: str | os.PathLike = "build",
    model_name: str = DEFAULT_MODEL_NAME,
    overwrite: bool = False,
    threads: int | None = None,
    programs: str | os.PathLike | None = None,
    progress: bool = True,
) -> pathlib.Path:
    """Writes a GGUF in another quantization with `llama-quantize --allow-requantize`, or reuses it.

    The output and a JSON record beside it (`<model>_<kind>.json`: the source
    file and its sha256, the command, the llama.cpp commit) are written
    atomically. An output whose record names the same source sha256 is reused.

    Args:
      source_gguf: The GGUF to start from; None is SmolLM2-135M-Instruct Q4_1
        (`converter.models.smollm2.find_gguf`, fetched from PyPI once).
      kind: `Q8_0` or `Q4_0`.
      build_dir: The project's build folder (llama.cpp is built there if needed).
      model_name: Names the output folder and file.
      overwrite: Replace an output made from another source.
      threads: llama-quantize's thread count; None lets it choose.
      programs: A folder with the `llama-quantize` to use; None builds llama.cpp in `build_dir` if needed.
      progress: Log progress to the console.

    Returns:
      The requantized file, `<build_dir>/<model>/<model>_<kind>.gguf`.

    Raises:
      ValueError: an unsupported kind, or the output exists from another source and `overwrite` is False.
      FileNotFoundError: the source is missing, or llama.cpp cannot be built.
      RuntimeError: llama-quantize failed; nothing was written.
    """
    kind = _check_kind(kind)
    output = requantized_path(kind, build_dir=build_dir, model_name=model_name)
    if source_gguf is None:
        from converter.models import smollm2  # pylint: disable=import-outside-toplevel

        source = smollm2.find_gguf(build_dir=build_dir, progress=progress)
    else:
        source = pathlib.Path(source_gguf)
        if not source.is_file():
            raise FileNotFoundError(f"No GGUF file at {str(source)!r}.")
    source_sha256 = files.sha256_of(source)
    record_path = output.with_suffix(".json")
    if output.is_file():
        try:
            recorded = json.loads(record_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            recorded = {}
        if recorded.get("source_sha256") == source_sha256 and recorded.get("kind") == kind:
            progress_lib.log(TAG, f"using {output}", enabled=progress)
            return output
        if not overwrite:
            made_from = (
                f"sha256 {recorded['source_sha256']}" if recorded.get("source_sha256") else f"no {record_path.name}"
            )
            raise ValueError(
                f"{output} exists but was not made from {source} ({made_from}); pass overwrite=True to replace it, "
                "or choose another model_name or build_dir."
            )
    quantize, origin = _program("llama-quantize", programs=programs, build_dir=build_dir, progress=progress)
    started = time.perf_counter()
    with files.atomic_output(output) as temporary:
        command = [str(quantize), "--allow-requantize", str(source), str(temporary), kind]
        if threads:
            command.append(str(threads))
        progress_lib.log(TAG, f"{shlex.join(command[:2])} {source.name} -> {output.name} ({kind})", enabled=progress)
        finished = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
        if finished.returncode != 0:
            tail = "\n".join((finished.stderr + finished.stdout).strip().splitlines()[-_TAIL_LINES:])
            raise RuntimeError(f"llama-quantize failed (exit {finished.returncode}): {shlex.join(command)}\n{tail}")
    record = {
        "file": output.name,
        "kind": kind,
        "bytes": output.stat().st_size,
        "sha256": files.sha256_of(output),
        "source": str(source),
        "source_sha256": source_sha256,
        "command": [str(quantize), "--allow-requantize", str(source), str(output), kind, *command[5:]],
        "llama_cpp": origin,
        "seconds": round(time.perf_counter() - started, 1),
    }
    files.write_atomically(record_path, json.dumps(record, indent=2) + "\n")
    progress_lib.log(
        TAG, f"wrote {output} ({record['bytes'] / 2**20:.1f} MiB) in {record['seconds']} s", enabled=progress
    )
    return output


# --- benchmarking -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LlamaBenchRow:
    """One llama-bench test at one thread count.

    Attributes:
      test: `pp<N>` (prefill of N prompt tokens), `tg<N>` (N generated tokens) or `pp<N>+tg<M>`, with
        `@ d<D>` when run at a context depth.
      n_prompt: Prompt tokens.
      n_gen: Generated tokens.
      n_depth: Tokens already in the context.
      threads: CPU threads.
      avg_tokens_per_second: Mean over the repetitions.
      stddev_tokens_per_second: Their standard deviation.
      avg_ns: Mean time of one repetition, nanoseconds.
      samples_tokens_per_second: Every repetition's figure.
    """

    test: str
    n_prompt: int
    n_gen: int
    n_depth: int
    threads: int
    avg_tokens_per_second: float
    stddev_tokens_per_second: float
    avg_ns: int
    samples_tokens_per_second: tuple[float, ...]


# The fields llama-bench reports about the build and the machine, the same in every record.
_BUILD_FIELDS = ("build_commit", "build_number", "cpu_info", "gpu_info", "backends")
_MODEL_FIELDS = ("model_filename", "model_type", "model_size", "model_n_params")


@dataclasses.dataclass(frozen=True)
class LlamaBenchResult:
    """What `llama-bench -o json` measured on one GGUF file, and how.

    Attributes:
      gguf: The file benchmarked.
      gguf_sha256: Its sha256.
      command: The exact llama-bench command line.
      build: What llama-bench reports about itself and the machine: `build_commit`, `build_number`,
        `cpu_info`, `gpu_info`, `backends`.
      model: What it reports about the model: `model_filename`, `model_type` (e.g. `llama ?B Q8_0`),
        `model_size` (bytes), `model_n_params`.
      rows: One per (test, threads), in llama-bench's order.
      llama_cpp: Where the programs came from: the stamp of our build (sdist sha256, commit, CMake
        options), or just the folder for programs built elsewhere.
      seconds: Wall time of the llama-bench run.
      records: llama-bench's JSON records as printed, for fields not taken out above.
    """

    gguf: str
    gguf_sha256: str
    command: tuple[str, ...]
    build: Mapping[str, Any]
    model: Mapping[str, Any]
    rows: tuple[LlamaBenchRow, ...]
    llama_cpp: Mapping[str, Any]
    seconds: float
    records: tuple[Mapping[str, Any], ...] = ()

    def row(self, test: str, threads: int) -> LlamaBenchRow:
        """The row of one test (e.g. `tg128`) at one thread count.

        Raises:
          KeyError: there is no such row; the message lists the rows there are.
        """
        for candidate in self.rows:
            if candidate.test == test and candidate.threads == threads:
                return candidate
        there = ", ".join(f"{r.test}@{r.threads}t" for r in self.rows)
        raise KeyError(f"No {test} at {threads} threads in this result (it has {there}).")

    def tokens_per_second(self, test: str, threads: int) -> float:
        """The mean tokens per second of one test at one thread count."""
        return self.row(test, threads).avg_tokens_per_second

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["command"] = list(self.command)
        result["build"] = dict(self.build)
        result["model"] = dict(self.model)
        result["llama_cpp"] = dict(self.llama_cpp)
        result["rows"] = [
            dict(dataclasses.asdict(row), samples_tokens_per_second=list(row.samples_tokens_per_second))
            for row in self.rows
        ]
        result["records"] = [dict(record) for record in self.records]
        return result

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LlamaBenchResult:
        """The inverse of `to_dict`."""
        rows = tuple(
            LlamaBenchRow(**dict(row, samples_tokens_per_second=tuple(row["samples_tokens_per_second"])))
            for row in data["rows"]
        )
        return cls(
            gguf=data["gguf"],
            gguf_sha256=data["gguf_sha256"],
            command=tuple(data["command"]),
            build=dict(data["build"]),
            model=dict(data["model"]),
            rows=rows,
            llama_cpp=dict(data.get("llama_cpp", {})),
            seconds=float(data["seconds"]),
            records=tuple(data.get("records", ())),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> LlamaBenchResult:
        """Reads a result written by `save`."""
        return cls.from_dict(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))

    def to_markdown(self) -> str:
        """A table of tokens per second, one line per (test, threads), under the model and the CPU."""
        lines = [
            f"llama.cpp {self.build.get('build_commit', '?')} on {self.build.get('cpu_info', '?')} "
            f"({self.build.get('backends', '?')}); {self.model.get('model_type', '?')}, "
            f"{int(self.model.get('model_size', 0)) / 2**20:.1f} MiB",
            "",
            f"`{shlex.join(self.command)}`",
            "",
            "| test | threads | tokens/s | stddev |",
            "| --- | --- | --- | --- |",
        ]
        for row in self.rows:
            lines.append(
                f"| {row.test} | {row.threads} | {row.avg_tokens_per_second:.2f} | {row.stddev_tokens_per_second:.2f} |"
            )
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes `to_json()` to `path` atomically.

        Raises:
          FileExistsError: `path` exists and `overwrite` is False.
        """
        files.refuse_existing([path], overwrite=overwrite)
        return files.write_atomically(path, self.to_json())


def bench_command(
    llama_bench: str | os.PathLike,
    gguf: str | os.PathLike,
    *,
    threads: Iterable[int] = (1, 2),
    prompt_tokens: Iterable[int] = (128, 512),
    generated_tokens: int = 128,
    repetitions: int = 3,
) -> list[str]:
    """The llama-bench command `bench` runs: `-m <gguf> -p 128,512 -n 128 -t 1,2 -r 3 -o json` by default."""
    threads, prompt_tokens = tuple(threads), tuple(prompt_tokens)
    if not threads or any(int(t) < 1 for t in threads):
        raise ValueError(f"threads must be one or more counts of at least 1, got {threads!r}.")
    if any(int(p) < 0 for p in prompt_tokens) or int(generated_tokens) < 0:
        raise ValueError("prompt_tokens and generated_tokens must not be negative.")
    if not any(prompt_tokens) and not generated_tokens:
        raise ValueError("Nothing to measure: give prompt_tokens or generated_tokens above 0.")
    if int(repetitions) < 1:
        raise ValueError(f"repetitions must be at least 1, got {repetitions!r}.")
    return [
        str(llama_bench),
        "-m",
        str(gguf),
        "-p",
        ",".join(str(int(p)) for p in prompt_tokens) or "0",
        "-n",
        str(int(generated_tokens)),
        "-t",
        ",".join(str(int(t)) for t in threads),
        "-r",
        str(int(repetitions)),
        "-o",
        "json",
    ]


def parse_llama_bench_json(
    text: str,
    *,
    command: Sequence[str],
    gguf: str | os.PathLike,
    gguf_sha256: str = "",
    llama_cpp: Mapping[str, Any] | None = None,
    seconds: float = 0.0,
) -> LlamaBenchResult:
    """Turns the output of `llama-bench -o json` into a `LlamaBenchResult`.

    Args:
      text: What llama-bench printed on stdout: a JSON list of test records.
      command: The command that printed it.
      gguf: The model file.
      gguf_sha256: Its sha256, if known.
      llama_cpp: Where the programs came from (see `LlamaBenchResult.llama_cpp`).
      seconds: How long the run took.

    Raises:
      ValueError: the text is not llama-bench's JSON, holds no test, or its records disagree about the
        build or the model.
    """
    start = text.find("[")
    try:
        records = json.loads(text[start:] if start >= 0 else text)
    except json.JSONDecodeError as error:
        raise ValueError(f"llama-bench did not print JSON ({error}); it printed: {text[:300]!r}") from error
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"llama-bench printed no test records: {text[:300]!r}")
    fields = {*_BUILD_FIELDS, *_MODEL_FIELDS, "n_prompt", "n_gen", "n_threads", "avg_ts", "stddev_ts"}
    missing = sorted(fields - set(records[0]))
    if missing:
        raise ValueError(f"llama-bench's JSON lacks {', '.join(missing)}: another llama-bench version?")
    build = {name: records[0][name] for name in _BUILD_FIELDS}
    model = {name: records[0][name] for name in _MODEL_FIELDS}
    for record in records[1:]:
        if {name: record.get(name) for name in _BUILD_FIELDS} != build or any(
            record.get(name) != model[name] for name in _MODEL_FIELDS
        ):
            raise ValueError("llama-bench's records disagree about the build or the model; one file per run, please.")
    rows = tuple(_row(record) for record in records)
    return LlamaBenchResult(
        gguf=str(gguf),
        gguf_sha256=gguf_sha256,
        command=tuple(command),
        build=build,
        model=model,
        rows=rows,
        llama_cpp=dict(llama_cpp or {}),
        seconds=round(float(seconds), 1),
        records=tuple(records),
    )


def _row(record: Mapping[str, Any]) -> LlamaBenchRow:
    n_prompt, n_gen, n_depth = int(record["n_prompt"]), int(record["n_gen"]), int(record.get("n_depth", 0))
    if n_prompt and n_gen:
        test = f"pp{n_prompt}+tg{n_gen}"
    elif n_prompt:
        test = f"pp{n_prompt}"
    else:
        test = f"tg{n_gen}"
    if n_depth:
        test += f" @ d{n_depth}"
    return LlamaBenchRow(
        test=test,
        n_prompt=n_prompt,
        n_gen=n_gen,
        n_depth=n_depth,
        threads=int(record["n_threads"]),
        avg_tokens_per_second=float(record["avg_ts"]),
        stddev_tokens_per_second=float(record["stddev_ts"]),
        avg_ns=int(record.get("avg_ns", 0)),
        samples_tokens_per_second=tuple(float(v) for v in record.get("samples_ts", ())),
    )


def bench(
    gguf: str | os.PathLike,
    *,
    threads: Iterable[int] = (1, 2),
    prompt_tokens: Iterable[int] = (128, 512),
    generated_tokens: int = 128,
    repetitions: int = 3,
    build_dir: str | os.PathLike = "build",
    programs: str | os.PathLike | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> LlamaBenchResult:
    """Measures a GGUF file with llama-bench: prefill and generation tokens per second per thread count.

    Runs `llama-bench -m <gguf> -p 128,512 -n 128 -t 1,2 -r 3 -o json` (with
    these arguments' values) and parses its JSON.

    Args:
      gguf: The model file.
      threads: Thread counts, each measured in turn.
      prompt_tokens: Prompt lengths of the prefill tests (`pp<N>`); empty for none.
      generated_tokens: Tokens of the generation test (`tg<N>`); 0 for none.
      repetitions: Runs per test (llama-bench warms up once before them).
      build_dir: The project's build folder; llama.cpp is built there if `programs` is None and it is not yet.
      programs: A folder with another `llama-bench` to use instead of ours.
      timeout: Seconds before the run is stopped; None waits.
      progress: Log progress to the console.

    Returns:
      The measurements, the command and the build llama-bench reports.

    Raises:
      FileNotFoundError: the file or llama-bench is missing (or llama.cpp cannot be built).
      ValueError: bad counts, or llama-bench's output is not what it should be.
      RuntimeError: llama-bench failed.
    """
    gguf = pathlib.Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"No GGUF file at {str(gguf)!r}.")
    llama_bench, origin = _program("llama-bench", programs=programs, build_dir=build_dir, progress=progress)
    command = bench_command(
        llama_bench,
        gguf,
        threads=threads,
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        repetitions=repetitions,
    )
    progress_lib.log(TAG, f"{shlex.join(command)}", enabled=progress)
    started = time.perf_counter()
    try:
        finished = subprocess.run(
            command, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"llama-bench did not finish in {timeout} s: {shlex.join(command)}") from error
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        tail = "\n".join((finished.stderr + finished.stdout).strip().splitlines()[-_TAIL_LINES:])
        raise RuntimeError(f"llama-bench failed (exit {finished.returncode}): {shlex.join(command)}\n{tail}")
    result = parse_llama_bench_json(
        finished.stdout,
        command=command,
        gguf=gguf,
        gguf_sha256=files.sha256_of(gguf),
        llama_cpp=origin,
        seconds=seconds,
    )
    for row in result.rows:
        progress_lib.log(
            TAG, f"{gguf.name} {row.test} {row.threads} thr: {row.avg_tokens_per_second:.1f} tok/s", enabled=progress
        )
    return result
