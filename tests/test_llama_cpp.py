"""llama.cpp as a peer baseline: llama-bench's JSON, the build cache, the refusals, and (large) a real build."""

import dataclasses
import json
import os
import pathlib
import stat
import subprocess
import tarfile

import pytest

from converter.common import files
from converter.tools import llama_cpp

PROJECT_BUILD_DIR = pathlib.Path(__file__).resolve().parents[1] / "build"

# Recorded on 2026-12-01 from `llama-bench -m build/smollm2-135m/smollm2-135m_Q8_0.gguf -p 16 -n 16 -r 1 -t 1,2
# -o json` (this module's build of llama.cpp 0c1e570, 2-core KVM Xeon); every field as printed, lines reflowed.
RECORDED_LLAMA_BENCH_JSON = """
[
  {"build_commit": "0c1e570", "build_number": 0, "cpu_info": "Intel(R) Xeon(R) Processor", "gpu_info": "",
   "backends": "CPU", "model_filename": "build/smollm2-135m/smollm2-135m_Q8_0.gguf",
   "model_type": "llama 256M Q8_0", "model_size": 143025408, "model_n_params": 134515008, "n_batch": 2048,
   "n_ubatch": 512, "n_threads": 1, "cpu_mask": "0x0", "cpu_strict": false, "poll": 50, "type_k": "f16",
   "type_v": "f16", "n_gpu_layers": -1, "n_cpu_moe": 0, "split_mode": "layer", "main_gpu": 0,
   "no_kv_offload": false, "flash_attn": -1, "devices": "auto", "tensor_split": "0.00",
   "tensor_buft_overrides": "none", "load_mode": "auto", "lazy_mode": "auto", "embeddings": false,
   "no_op_offload": 0, "no_host": false, "repack": true, "fit_target": 0, "fit_min_ctx": 0, "n_prompt": 16,
   "n_gen": 0, "n_depth": 0, "test_time": "2026-12-01T23:59:34Z", "avg_ns": 70364829, "stddev_ns": 0,
   "avg_ts": 227.386327, "stddev_ts": 0.0, "samples_ns": [70364829], "samples_ts": [227.386]},
  {"build_commit": "0c1e570", "build_number": 0, "cpu_info": "Intel(R) Xeon(R) Processor", "gpu_info": "",
   "backends": "CPU", "model_filename": "build/smollm2-135m/smollm2-135m_Q8_0.gguf",
   "model_type": "llama 256M Q8_0", "model_size": 143025408, "model_n_params": 134515008, "n_batch": 2048,
   "n_ubatch": 512, "n_threads": 1, "cpu_mask": "0x0", "cpu_strict": false, "poll": 50, "type_k": "f16",
   "type_v": "f16", "n_gpu_layers": -1, "n_cpu_moe": 0, "split_mode": "layer", "main_gpu": 0,
   "no_kv_offload": false, "flash_attn": -1, "devices": "auto", "tensor_split": "0.00",
   "tensor_buft_overrides": "none", "load_mode": "auto", "lazy_mode": "auto", "embeddings": false,
   "no_op_offload": 0, "no_host": false, "repack": true, "fit_target": 0, "fit_min_ctx": 0, "n_prompt": 0,
   "n_gen": 16, "n_depth": 0, "test_time": "2026-12-01T23:59:34Z", "avg_ns": 346280942, "stddev_ns": 0,
   "avg_ts": 46.205257, "stddev_ts": 0.0, "samples_ns": [346280942], "samples_ts": [46.2053]},
  {"build_commit": "0c1e570", "build_number": 0, "cpu_info": "Intel(R) Xeon(R) Processor", "gpu_info": "",
   "backends": "CPU", "model_filename": "build/smollm2-135m/smollm2-135m_Q8_0.gguf",
   "model_type": "llama 256M Q8_0", "model_size": 143025408, "model_n_params": 134515008, "n_batch": 2048,
   "n_ubatch": 512, "n_threads": 2, "cpu_mask": "0x0", "cpu_strict": false, "poll": 50, "type_k": "f16",
   "type_v": "f16", "n_gpu_layers": -1, "n_cpu_moe": 0, "split_mode": "layer", "main_gpu": 0,
   "no_kv_offload": false, "flash_attn": -1, "devices": "auto", "tensor_split": "0.00",
   "tensor_buft_overrides": "none", "load_mode": "auto", "lazy_mode": "auto", "embeddings": false,
   "no_op_offload": 0, "no_host": false, "repack": true, "fit_target": 0, "fit_min_ctx": 0, "n_prompt": 16,
   "n_gen": 0, "n_depth": 0, "test_time": "2026-12-01T23:59:34Z", "avg_ns": 44330348, "stddev_ns": 0,
   "avg_ts": 360.92656, "stddev_ts": 0.0, "samples_ns": [44330348], "samples_ts": [360.927]},
  {"build_commit": "0c1e570", "build_number": 0, "cpu_info": "Intel(R) Xeon(R) Processor", "gpu_info": "",
   "backends": "CPU", "model_filename": "build/smollm2-135m/smollm2-135m_Q8_0.gguf",
   "model_type": "llama 256M Q8_0", "model_size": 143025408, "model_n_params": 134515008, "n_batch": 2048,
   "n_ubatch": 512, "n_threads": 2, "cpu_mask": "0x0", "cpu_strict": false, "poll": 50, "type_k": "f16",
   "type_v": "f16", "n_gpu_layers": -1, "n_cpu_moe": 0, "split_mode": "layer", "main_gpu": 0,
   "no_kv_offload": false, "flash_attn": -1, "devices": "auto", "tensor_split": "0.00",
   "tensor_buft_overrides": "none", "load_mode": "auto", "lazy_mode": "auto", "embeddings": false,
   "no_op_offload": 0, "no_host": false, "repack": true, "fit_target": 0, "fit_min_ctx": 0, "n_prompt": 0,
   "n_gen": 16, "n_depth": 0, "test_time": "2026-12-01T23:59:34Z", "avg_ns": 210452187, "stddev_ns": 0,
   "avg_ts": 76.02677, "stddev_ts": 0.0, "samples_ns": [210452187], "samples_ts": [76.0268]}
]
"""


def _fake_program(folder: pathlib.Path, name: str, script: str = "exit 0") -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _fake_build(build_dir: pathlib.Path, **stamp_changes) -> pathlib.Path:
    """A build folder as build_llama_cpp leaves it: every program and a complete stamp."""
    programs = llama_cpp.bin_dir(build_dir)
    for name in llama_cpp.TARGETS:
        _fake_program(programs, name)
    stamp = {
        "complete": True,
        "sdist_sha256": llama_cpp.SDIST_SHA256,
        "cmake_options": list(llama_cpp.cmake_options()),
        "targets": list(llama_cpp.TARGETS),
        "llama_cpp_commit": llama_cpp.LLAMA_CPP_COMMIT,
    }
    stamp.update(stamp_changes)
    (llama_cpp.cmake_build_dir(build_dir) / llama_cpp.STAMP_FILE).write_text(json.dumps(stamp))
    return programs


@pytest.fixture
def no_subprocesses(monkeypatch):
    """Fails the test if anything starts a program (pip, cmake, a compiler)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture
def clean_tool_env(monkeypatch):
    for name in ("CC", "CXX", "CMAKE_GENERATOR"):
        monkeypatch.delenv(name, raising=False)


def _tool_folder(tmp_path: pathlib.Path, names, *, cmake_version: str = "3.25.1") -> pathlib.Path:
    folder = tmp_path / "tools"
    folder.mkdir(exist_ok=True)
    for name in names:
        script = f'echo "cmake version {cmake_version}"' if name == "cmake" else "exit 0"
        _fake_program(folder, name, script)
    return folder


# --- llama-bench's JSON ---------------------------------------------------------------------------------------


def test_the_recorded_llama_bench_json_parses_into_rows_per_test_and_threads():
    result = llama_cpp.parse_llama_bench_json(
        RECORDED_LLAMA_BENCH_JSON, command=["llama-bench", "-o", "json"], gguf="m.gguf", seconds=3.21
    )
    assert [(row.test, row.threads) for row in result.rows] == [("pp16", 1), ("tg16", 1), ("pp16", 2), ("tg16", 2)]
    records = json.loads(RECORDED_LLAMA_BENCH_JSON)
    for row, record in zip(result.rows, records):
        assert row.avg_tokens_per_second == record["avg_ts"]
        assert row.stddev_tokens_per_second == record["stddev_ts"]
        assert row.samples_tokens_per_second == tuple(record["samples_ts"])
        assert row.n_prompt == record["n_prompt"] and row.n_gen == record["n_gen"]
    assert result.build["build_commit"] == llama_cpp.LLAMA_CPP_SHORT_COMMIT
    assert result.build["backends"] == records[0]["backends"]
    assert result.build["cpu_info"] == records[0]["cpu_info"]
    assert result.model["model_size"] == records[0]["model_size"]
    assert result.tokens_per_second("tg16", 2) == records[3]["avg_ts"]
    assert result.command == ("llama-bench", "-o", "json")
    assert result.seconds == 3.2
    with pytest.raises(KeyError, match=r"No pp512 at 2 threads in this result \(it has pp16@1t, tg16@1t"):
        result.row("pp512", 2)


def test_a_result_saves_loads_and_refuses_to_overwrite(tmp_path):
    result = llama_cpp.parse_llama_bench_json(RECORDED_LLAMA_BENCH_JSON, command=["llama-bench"], gguf="m.gguf")
    path = tmp_path / "llama_bench.json"
    assert result.save(path) == path
    assert llama_cpp.LlamaBenchResult.load(path) == result
    assert json.loads(path.read_text())["rows"][0]["test"] == "pp16"
    with pytest.raises(FileExistsError, match="exists. Pass overwrite=True"):
        result.save(path)
    result.save(path, overwrite=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.seconds = 1.0
    table = result.to_markdown()
    assert "| tg16 | 2 |" in table and result.build["cpu_info"] in table


@pytest.mark.parametrize(
    "text, message",
    [
        ("main: error: failed to load model 'x.gguf'", "llama-bench did not print JSON"),
        ("[]", "llama-bench printed no test records"),
        ('[{"n_prompt": 16}]', "llama-bench's JSON lacks avg_ts, backends"),
    ],
)
def test_output_that_is_not_llama_bench_json_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        llama_cpp.parse_llama_bench_json(text, command=["llama-bench"], gguf="m.gguf")


def test_records_of_two_builds_in_one_output_are_refused():
    records = json.loads(RECORDED_LLAMA_BENCH_JSON)
    records[1]["build_commit"] = "something-else"
    with pytest.raises(ValueError, match="disagree about the build or the model"):
        llama_cpp.parse_llama_bench_json(json.dumps(records), command=["llama-bench"], gguf="m.gguf")


def test_the_bench_command_is_the_documented_one():
    assert llama_cpp.bench_command("bin/llama-bench", "m.gguf") == (
        ["bin/llama-bench", "-m", "m.gguf", "-p", "128,512", "-n", "128", "-t", "1,2", "-r", "3", "-o", "json"]
    )
    short = llama_cpp.bench_command(
        "llama-bench", "m.gguf", threads=(2,), prompt_tokens=(16,), generated_tokens=16, repetitions=1
    )
    assert short == ["llama-bench", "-m", "m.gguf", "-p", "16", "-n", "16", "-t", "2", "-r", "1", "-o", "json"]
    with pytest.raises(ValueError, match="threads must be one or more counts of at least 1"):
        llama_cpp.bench_command("llama-bench", "m.gguf", threads=(0,))
    with pytest.raises(ValueError, match="Nothing to measure"):
        llama_cpp.bench_command("llama-bench", "m.gguf", prompt_tokens=(), generated_tokens=0)


def test_bench_refuses_a_missing_model_or_program(tmp_path):
    with pytest.raises(FileNotFoundError, match="No GGUF file at"):
        llama_cpp.bench(tmp_path / "missing.gguf", programs=tmp_path, progress=False)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(FileNotFoundError, match="No llama-bench program in"):
        llama_cpp.bench(model, programs=tmp_path, progress=False)


def test_bench_runs_the_command_and_records_where_the_programs_came_from(tmp_path):
    programs = _fake_build(tmp_path)
    # A llama-bench that prints the recorded JSON and its own arguments on stderr.
    sample = tmp_path / "sample.json"
    sample.write_text(RECORDED_LLAMA_BENCH_JSON)
    _fake_program(programs, "llama-bench", f'echo "$@" >&2\ncat "{sample}"')
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    result = llama_cpp.bench(model, programs=programs, threads=(1, 2), prompt_tokens=(16,), generated_tokens=16)
    assert result.command == (
        str(programs / "llama-bench"),
        "-m",
        str(model),
        *["-p", "16", "-n", "16", "-t", "1,2", "-r", "3", "-o", "json"],
    )
    assert result.gguf_sha256 == files.sha256_of(model)
    assert result.llama_cpp["sdist_sha256"] == llama_cpp.SDIST_SHA256
    assert result.llama_cpp["programs"] == str(programs)


# --- the build cache and the refusals ------------------------------------------------------------------------


def test_a_matching_build_is_reused_at_once_without_any_tool(tmp_path, monkeypatch, no_subprocesses, capsys):
    programs = _fake_build(tmp_path)
    monkeypatch.setenv("PATH", "")
    assert llama_cpp.is_built(build_dir=tmp_path)
    assert llama_cpp.build_llama_cpp(build_dir=tmp_path) == programs
    assert f"[llama.cpp] using the build in {programs}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change",
    [
        {"sdist_sha256": "0" * 64},
        {"cmake_options": [*llama_cpp.cmake_options(), "-DGGML_NATIVE=OFF"]},
        {"complete": False},
    ],
    ids=["other-sdist", "other-options", "unfinished"],
)
def test_a_build_with_another_stamp_is_not_reused(tmp_path, monkeypatch, no_subprocesses, clean_tool_env, change):
    _fake_build(tmp_path, **change)
    assert not llama_cpp.is_built(build_dir=tmp_path)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FileNotFoundError, match=r"Building llama.cpp needs cmake \(3.15 or newer\)"):
        llama_cpp.build_llama_cpp(build_dir=tmp_path, progress=False)


def test_a_build_missing_a_program_or_with_other_extra_options_is_not_reused(tmp_path):
    programs = _fake_build(tmp_path)
    assert llama_cpp.is_built(build_dir=tmp_path, targets=("llama-bench",))
    assert not llama_cpp.is_built(build_dir=tmp_path, extra_cmake_options=("-DGGML_NATIVE=OFF",))
    (programs / "llama-cli").chmod(0o644)
    assert not llama_cpp.is_built(build_dir=tmp_path)
    assert llama_cpp.is_built(build_dir=tmp_path, targets=("llama-bench", "llama-quantize"))
    (programs / "llama-bench").unlink()
    assert not llama_cpp.is_built(build_dir=tmp_path, targets=("llama-bench",))


def test_a_missing_cmake_is_named_before_any_work(tmp_path, monkeypatch, no_subprocesses, clean_tool_env):
    tools = _tool_folder(tmp_path, ["cc", "c++", "make"])
    monkeypatch.setenv("PATH", str(tools))
    build_dir = tmp_path / "build"
    with pytest.raises(FileNotFoundError) as caught:
        llama_cpp.build_llama_cpp(build_dir=build_dir, progress=False)
    message = str(caught.value)
    assert "needs cmake (3.15 or newer), not found on PATH" in message
    assert "compiler (" not in message and "make (for" not in message
    assert "nothing was downloaded or built" in message
    assert not build_dir.exists()


def test_missing_compilers_and_make_are_all_named(tmp_path, monkeypatch, clean_tool_env):
    tools = _tool_folder(tmp_path, ["cmake"])
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(FileNotFoundError) as caught:
        llama_cpp.check_build_tools()
    message = str(caught.value)
    assert "a C compiler (cc, gcc or clang)" in message
    assert "a C++ compiler (c++, g++ or clang++)" in message
    assert "make (for CMake's 'Unix Makefiles' generator)" in message
    assert "cmake (" not in message


def test_an_old_cmake_and_a_missing_cxx_are_named(tmp_path, monkeypatch, clean_tool_env):
    tools = _tool_folder(tmp_path, ["cmake", "cc", "c++", "make"], cmake_version="3.10.2")
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setenv("CXX", "my-clang++")
    with pytest.raises(FileNotFoundError) as caught:
        llama_cpp.check_build_tools()
    message = str(caught.value)
    assert f"cmake 3.15 or newer ({tools / 'cmake'} is 3.10)" in message
    assert "a C++ compiler (CXX='my-clang++' is not on PATH)" in message
    assert "a C compiler" not in message


def test_the_ninja_generator_needs_ninja(tmp_path, monkeypatch, clean_tool_env):
    tools = _tool_folder(tmp_path, ["cmake", "cc", "c++", "make"])
    env = {"PATH": str(tools), "CMAKE_GENERATOR": "Ninja"}
    with pytest.raises(FileNotFoundError, match=r"ninja \(for CMake's 'Ninja' generator\)"):
        llama_cpp.check_build_tools(env=env)
    _fake_program(tools, "ninja")
    llama_cpp.check_build_tools(env=env)


def test_without_download_the_message_says_how_to_fetch_the_sdist(tmp_path, monkeypatch, clean_tool_env):
    monkeypatch.setenv("PATH", f"{_tool_folder(tmp_path, ['cmake', 'cc', 'c++', 'make'])}{os.pathsep}{os.defpath}")
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps --no-binary :all: llama-cpp-python==0\.3\.36"):
        llama_cpp.build_llama_cpp(build_dir=tmp_path, download=False, progress=False)


def test_a_hand_copied_sdist_with_another_hash_is_refused(tmp_path, monkeypatch, clean_tool_env):
    monkeypatch.setenv("PATH", f"{_tool_folder(tmp_path, ['cmake', 'cc', 'c++', 'make'])}{os.pathsep}{os.defpath}")
    sdist = llama_cpp.llama_cpp_dir(tmp_path) / llama_cpp.SDIST_NAME
    sdist.parent.mkdir(parents=True)
    payload = tmp_path / "CMakeLists.txt"
    payload.write_text("project(x)\n")
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(payload, arcname=llama_cpp.VENDOR_PREFIX + "CMakeLists.txt")
    with pytest.raises(ValueError, match=r"is not the pinned llama-cpp-python==0\.3\.36 sdist \(sha256 "):
        llama_cpp.build_llama_cpp(build_dir=tmp_path, download=False, progress=False)
    assert not llama_cpp.source_dir(tmp_path).exists()


def test_cmake_options_keep_amx_out_on_x86_64_only_and_extra_ones_must_be_options():
    x86 = llama_cpp.cmake_options(machine="x86_64")
    assert "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in x86
    assert not any("amx" in option for option in llama_cpp.cmake_options(machine="aarch64"))
    assert llama_cpp.cmake_options(extra_cmake_options=["-DGGML_NATIVE=OFF"])[-1] == "-DGGML_NATIVE=OFF"
    with pytest.raises(ValueError, match="does not start with '-'"):
        llama_cpp.cmake_options(extra_cmake_options=["GGML_NATIVE=OFF"])


# --- requantizing ---------------------------------------------------------------------------------------------


def test_requantize_names_its_output_and_refuses_other_kinds(tmp_path):
    assert llama_cpp.requantized_path("q8_0", build_dir=tmp_path) == (
        tmp_path / "smollm2-135m" / "smollm2-135m_Q8_0.gguf"
    )
    with pytest.raises(ValueError, match="Unsupported quantization 'Q2_K'; choose one of Q8_0, Q4_0"):
        llama_cpp.requantize(tmp_path / "x.gguf", "Q2_K", build_dir=tmp_path)


def test_requantize_runs_llama_quantize_and_reuses_its_output(tmp_path, capsys):
    programs = _fake_build(tmp_path)
    # A llama-quantize that writes its arguments into the output file.
    _fake_program(programs, "llama-quantize", 'printf "%s\\n" "$@" > "$3"')
    source = tmp_path / "source.gguf"
    source.write_bytes(b"GGUF source")
    output = llama_cpp.requantize(source, "Q4_0", build_dir=tmp_path, programs=programs, progress=False)
    assert output == tmp_path / "smollm2-135m" / "smollm2-135m_Q4_0.gguf"
    arguments = output.read_text().splitlines()
    assert arguments[:2] == ["--allow-requantize", str(source)] and arguments[3] == "Q4_0"
    assert arguments[2] != str(output)  # written to a temporary file, renamed into place
    record = json.loads(output.with_suffix(".json").read_text())
    assert record["kind"] == "Q4_0" and record["source_sha256"] == files.sha256_of(source)
    assert record["command"][1:] == ["--allow-requantize", str(source), str(output), "Q4_0"]
    assert record["llama_cpp"]["sdist_sha256"] == llama_cpp.SDIST_SHA256
    # Reused: a llama-quantize that fails is not run again.
    _fake_program(programs, "llama-quantize", "exit 3")
    assert llama_cpp.requantize(source, "Q4_0", build_dir=tmp_path, programs=programs) == output
    assert "[llama.cpp] using" in capsys.readouterr().err
    # Another source is refused unless overwrite, and a failing llama-quantize leaves the old file.
    source.write_bytes(b"GGUF other")
    with pytest.raises(ValueError, match="exists but was not made from .* pass overwrite=True"):
        llama_cpp.requantize(source, "Q4_0", build_dir=tmp_path, programs=programs, progress=False)
    with pytest.raises(RuntimeError, match="llama-quantize failed \\(exit 3\\)"):
        llama_cpp.requantize(source, "Q4_0", build_dir=tmp_path, programs=programs, overwrite=True, progress=False)
    assert output.read_text().splitlines()[0] == "--allow-requantize"
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(".")] == []


# --- the real thing --------------------------------------------------------------------------------------------


@pytest.mark.large
def test_real_llama_cpp_builds_requantizes_smollm2_and_benchmarks_it(tmp_path):
    from converter.models import smollm2

    programs = llama_cpp.build_llama_cpp(build_dir=PROJECT_BUILD_DIR)
    for name in llama_cpp.TARGETS:
        assert os.access(programs / name, os.X_OK), name
    source = smollm2.find_gguf(build_dir=PROJECT_BUILD_DIR)
    q8 = llama_cpp.requantize(source, "Q8_0", build_dir=tmp_path, programs=programs)
    assert q8.read_bytes()[:4] == b"GGUF"
    assert q8.stat().st_size > source.stat().st_size  # 8-bit weights are larger than 4-bit ones
    result = llama_cpp.bench(
        q8, programs=programs, threads=(2,), prompt_tokens=(16,), generated_tokens=16, repetitions=1
    )
    assert [(row.test, row.threads) for row in result.rows] == [("pp16", 2), ("tg16", 2)]
    assert all(row.avg_tokens_per_second > 0 for row in result.rows)
    assert result.build["build_commit"] == llama_cpp.LLAMA_CPP_SHORT_COMMIT
    assert "CPU" in result.build["backends"]
    assert "Q8_0" in result.model["model_type"]
    assert result.llama_cpp["sdist_sha256"] == llama_cpp.SDIST_SHA256
