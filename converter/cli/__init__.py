"""The command lines behind the Makefile: absl flags parsed here (`cli.flags`), typed values passed in.

`python -m converter` is `cli.convert`; `make convert-all`, `android`, `bench`,
`debug`, `pi-pack` and `runtime-probe` run `python -m converter.cli.<name>`.
"""
