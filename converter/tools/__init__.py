"""Tools built on the conversion core: `auto` search, quantization debugging, baselines, runtime probing.

`auto` and `quant_debug` measure with the device-side harness (`benchmarks`);
`keras_bench` and `onnx_export` are the baselines `make bench` runs beside
LiteRT; `runtime_probe` (with `probe_models`, `runtime_envs`, `probe_loader`)
writes the runtime support table that `converter.compat` reads.
"""
