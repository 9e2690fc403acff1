"""Shipping a converted model: Android asset folders (model, tokenizer files, manifest) and Raspberry Pi packs."""

from converter.deploy.android_export import AndroidExport, export_android, read_embedded_manifest
from converter.deploy.pi_pack import PackResult, build_pack

__all__ = ["AndroidExport", "PackResult", "build_pack", "export_android", "read_embedded_manifest"]
