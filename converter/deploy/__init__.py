"""Shipping a converted model: Android asset folders (model, tokenizer files, manifest), Raspberry Pi packs and
LiteRT-LM bundles."""

from converter.deploy.android_export import AndroidExport, export_android, read_embedded_manifest
from converter.deploy.device_tokenizer import DeviceTokenizerExport, export_device_tokenizer
from converter.deploy.litertlm_bundle import LitertLmBundle, default_bundle_path, export_litertlm
from converter.deploy.pi_pack import PackResult, build_pack

__all__ = [
    "AndroidExport",
    "DeviceTokenizerExport",
    "LitertLmBundle",
    "PackResult",
    "build_pack",
    "default_bundle_path",
    "export_android",
    "export_device_tokenizer",
    "export_litertlm",
    "read_embedded_manifest",
]
