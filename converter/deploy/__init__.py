"""Shipping a converted model: Android asset folders (model, tokenizer files, manifest) and Raspberry Pi packs."""

from converter.deploy.android_export import AndroidExport, export_android, read_embedded_manifest
from converter.deploy.device_tokenizer import DeviceTokenizerExport, export_device_tokenizer
from converter.deploy.pi_pack import PackResult, build_pack

__all__ = [
    "AndroidExport",
    "DeviceTokenizerExport",
    "PackResult",
    "build_pack",
    "export_android",
    "export_device_tokenizer",
    "read_embedded_manifest",
]
