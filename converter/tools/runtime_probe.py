"""Writes the runtime support table by loading probe models in each runtime.

    make runtime-probe [RUNTIMES=tflite-runtime==2.14.0,ai-edge-litert==2.3.0,...]
    python -m converter.cli.runtime_probe [--runtimes=...]
        [--out=converter/compat/runtime_support.json] [--work_dir=build/runtime-probe]

Method (every verdict is something a runtime did, none is inferred):

1. Tiny GPT-2 and Llama models (the architectures the converter supports;
   one and two layers, fresh and trained-looking weights, grouped- and
   multi-query attention: `probe_models.PROBE_CONFIGS`) are converted by this
   project's converter in every mode.
2. Each distinct op signature (builtin op, version, input and output dtypes)
   of those models is cut out into a single-op model and fed the values its
   inputs held when the whole model ran.
3. For every builtin op seen, the single-op model is loaded with its version
   field set to 1 .. (highest version seen + 4): a runtime that answers
   "Didn't find op for builtin opcode" has no kernel registered for that
   version.
4. A Flex op and an unknown custom op are probed by turning the ADD probe
   into one.
5. Each runtime, in a venv of its own holding it and numpy only
   (`build/venvs/`), loads every probe and every whole model as the device
   harness does: `Interpreter(model_path, num_threads=1)` with its default
   delegates, `allocate_tensors()`, one `invoke()`.
6. Consistency: for every runtime and whole model, "the model runs" must equal
   "each of its op signatures runs"; otherwise the table is not written.
"""

from __future__ import annotations

import datetime
import json
import pathlib

from converter.common import files
from converter.common import progress as progress_lib
from converter.compat import runtime_support
from converter.core import modes
from converter.tflite_file import inspection
from converter.tools import probe_models, runtime_envs

DEFAULT_RUNTIMES = (
    "tflite-runtime==2.14.0",
    "ai-edge-litert==2.0.3",
    "ai-edge-litert==2.1.6",
    "ai-edge-litert==2.2.0",
    "ai-edge-litert==2.3.0",
)
_EXTRA_VERSIONS = 4
_REGISTRATION_ERROR = "Didn't find op for builtin opcode"


def _save(folder: pathlib.Path, name: str, model: bytes | None, inputs: dict | None, *, model_path=None) -> dict:
    """Writes a probe (unless `model_path` names an existing model) and its inputs; returns its job."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    if model_path is None:
        model_path = folder / f"{name}.tflite"
        model_path.write_bytes(model)
    inputs_path = None
    if inputs:
        inputs_path = folder / f"{name}.npz"
        np.savez(inputs_path, **inputs)
    return {
        "id": name,
        "model": str(model_path.resolve()),
        "inputs": None if inputs_path is None else str(inputs_path.resolve()),
    }


def build_jobs(
    work_dir: pathlib.Path, *, configs: list[str], mode_names: list[str], progress: bool = True
) -> tuple[list[dict], dict]:
    """Converts the probe models and writes every probe. Returns (jobs, what each job asks)."""
    models_dir = work_dir / "models"
    probes_dir = work_dir / "probes"
    models_dir.mkdir(parents=True, exist_ok=True)
    probes_dir.mkdir(parents=True, exist_ok=True)
    whole = probe_models.convert_probe_models(models_dir, modes=mode_names, architectures=configs, progress=progress)
    jobs: list[dict] = []
    plan = {"whole": {}, "signatures": {}, "versions": {}, "seen_in": {}, "flex": None, "custom": None}
    signature_probes: dict[str, probe_models.SingleOpProbe] = {}
    for (architecture, mode), path in whole.items():
        job_id = f"model-{architecture}-{mode}"
        jobs.append(_save(probes_dir, job_id, None, probe_models.model_inputs(path), model_path=path))
        plan["whole"][job_id] = {
            "architecture": architecture,
            "mode": mode,
            "signatures": [s.key for s in runtime_support.op_signatures(inspection.inspect_model(path))],
        }
        for probe in probe_models.single_op_probes(path, seen=signature_probes):
            signature_probes[probe.signature.key] = probe
        for key in plan["whole"][job_id]["signatures"]:
            plan["seen_in"].setdefault(key, []).append(f"{architecture}/{mode}")
    if progress:
        progress_lib.log("probe", f"{len(signature_probes)} op signatures in {len(whole)} probe models")
    highest: dict[str, tuple[int, str]] = {}
    for number, (key, probe) in enumerate(sorted(signature_probes.items())):
        job = _save(probes_dir, f"sig-{number:03d}", probe.model, probe.inputs)
        jobs.append(job)
        plan["signatures"][job["id"]] = key
        op, version = probe.signature.op, probe.signature.version
        if op not in highest or version > highest[op][0]:
            highest[op] = (version, key)
    for op, (version, key) in sorted(highest.items()):
        for probed in range(1, version + _EXTRA_VERSIONS + 1):
            job = _save(
                probes_dir,
                f"ver-{op}-{probed:02d}",
                probe_models.with_op_version(signature_probes[key].model, probed),
                signature_probes[key].inputs,
            )
            jobs.append(job)
            plan["versions"][job["id"]] = (op, probed)
    add = next(p for _, p in sorted(signature_probes.items()) if p.signature.op == "ADD")
    for kind, name in (("flex", probe_models.PROBE_FLEX_OP), ("custom", probe_models.PROBE_CUSTOM_OP)):
        job = _save(probes_dir, f"{kind}-{name}", probe_models.as_custom_op(add.model, name), add.inputs)
        jobs.append(job)
        plan[kind] = {"id": job["id"], "name": name}
    return jobs, plan


def _entry(outcome: runtime_envs.LoadOutcome) -> dict:
    return outcome.to_dict()


def runtime_entry(release: runtime_envs.RuntimeRelease, environment: dict, outcomes: dict, plan: dict) -> dict:
    """The table's entry for one runtime, from its outcomes."""
    signatures = {plan["signatures"][job_id]: _entry(outcomes[job_id]) for job_id in sorted(plan["signatures"])}
    registered: dict[str, dict] = {}
    for job_id, (op, version) in sorted(plan["versions"].items()):
        entry = registered.setdefault(op, {"probed": [version, version], "registered": []})
        entry["probed"] = [min(entry["probed"][0], version), max(entry["probed"][1], version)]
        outcome = outcomes[job_id]
        if outcome.loads or _REGISTRATION_ERROR not in (outcome.error or ""):
            entry["registered"].append(version)
    for entry in registered.values():
        entry["registered"].sort()
    by_mode: dict[str, dict] = {}
    for facts in plan["whole"].values():
        by_mode.setdefault(facts["architecture"], {})[facts["mode"]] = _entry(outcomes[job_id])
    return {
        "name": release.name,
        "version": release.version,
        "environment": environment,
        "op_signatures": signatures,
        "registered_versions": registered,
        "flex": _entry(outcomes[plan["flex"]["id"]]),
        "custom_ops": {plan["custom"]["name"]: _entry(outcomes[plan["custom"]["id"]])},
        "modes": by_mode,
    }


def inconsistencies(entry: dict, plan: dict) -> list[str]:
    """Whole models whose verdict differs from the verdicts of their op signatures."""
    found = []
    for facts in plan["whole"].values():
        whole = entry["modes"][facts["architecture"]][facts["mode"]]["loads"]
        parts = all(entry["op_signatures"][key]["loads"] for key in facts["signatures"])
        if whole != parts:
            found.append(
                f"{entry['name']} {entry['version']}: the {facts['architecture']} {facts['mode']} model "
                f"{'loads' if whole else 'does not load'} but its op signatures say it "
                f"{'should' if parts else 'should not'}"
            )
    return found


def probe(
    runtimes: list[str],
    *,
    work_dir: pathlib.Path,
    venvs_dir: pathlib.Path,
    configs: list[str] | None = None,
    mode_names: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Builds the probes, loads them in every runtime and returns the table (a dict).

    Args:
      runtimes: exact releases, e.g. `tflite-runtime==2.14.0`.
      work_dir: folder for the probe models and probes.
      venvs_dir: folder for the runtimes' venvs.
      configs: probe models (`probe_models.PROBE_CONFIGS`; default all).
      mode_names: conversion modes (default all).
      progress: report on stderr.

    Raises:
      ValueError: an unknown runtime, probe model or mode.
      RuntimeError: a venv could not be made, or the verdicts are inconsistent.
    """
    configs = list(configs or probe_models.PROBE_CONFIGS)
    mode_names = [modes.parse_mode(m).value for m in (mode_names or probe_models.PROBED_MODES)]
    unknown = sorted(set(configs) - set(probe_models.PROBE_CONFIGS))
    if unknown:
        raise ValueError(
            f"Unknown probe models {', '.join(unknown)}; choose from {', '.join(probe_models.PROBE_CONFIGS)}."
        )
    from converter.core import conversion  # pylint: disable=import-outside-toplevel

    releases = [runtime_envs.release(spec) for spec in runtimes]
    pythons = {r: runtime_envs.runtime_python(r, venvs_dir=venvs_dir, progress=progress) for r in releases}
    jobs, plan = build_jobs(work_dir, configs=configs, mode_names=mode_names, progress=progress)
    entries, problems = [], []
    for release in releases:
        if progress:
            progress_lib.log("probe", f"loading {len(jobs)} probes in {release.label} ({pythons[release]})")
        environment, outcomes = runtime_envs.load_models(pythons[release], release, jobs, work_dir=work_dir)
        if environment.get("version") != release.version:
            raise RuntimeError(f"{pythons[release]} holds {environment.get('version')}, not {release.label}.")
        entry = runtime_entry(release, environment, outcomes, plan)
        problems.extend(inconsistencies(entry, plan))
        entries.append(entry)
    if problems:
        raise RuntimeError("The probe is inconsistent, so no table was written:\n" + "\n".join(problems))
    versions = conversion.package_versions()
    return {
        "schema": runtime_support.SCHEMA,
        "created": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "generated_by": "python -m converter.cli.runtime_probe --runtimes="
        + ",".join(runtimes)
        + ("" if configs == list(probe_models.PROBE_CONFIGS) else " --probe_models=" + ",".join(configs))
        + ("" if mode_names == list(probe_models.PROBED_MODES) else " --modes=" + ",".join(mode_names)),
        "method": (
            "Each op signature (op, version, input and output dtypes) that the converter wrote for tiny GPT-2 "
            "and Llama models (probe_models) in every mode was cut into a single-op model, fed the values its inputs "
            "held in the whole model, and loaded in each runtime as benchmarks/ loads models (Interpreter(model_path, "
            "num_threads=1) with default delegates, allocate_tensors, invoke). Registered versions: the same "
            "probe with its version field set to each value; 'Didn't find op for builtin opcode' means not "
            "registered. Whole models were loaded too and agree with their op signatures."
        ),
        "converter_versions": {k: versions[k] for k in ("tensorflow", "ai-edge-litert", "keras", "keras-hub")},
        "probe_models": {
            "configs": {name: probe_models.PROBE_CONFIGS[name] for name in configs},
            "modes": mode_names,
            "seq_len": probe_models.PROBE_SEQ_LEN,
        },
        "signatures_seen_in": plan["seen_in"],
        "runtimes": entries,
    }


def write_table(table: dict, out: pathlib.Path) -> None:
    """Writes the table atomically."""
    files.write_atomically(out, json.dumps(table, indent=1, sort_keys=True) + "\n")
