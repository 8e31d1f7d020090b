"""The manifest content of an exported version, assembled from training's model config.

The schema, its keys and the writing of manifest.json belong to the model repository contract
(modelrepo.manifest); this module only fills it from what export knows.
"""
from modelrepo.manifest import new_manifest

ARCH = "genet_res50"


def build_manifest(*, name, version, model_cfg, preprocessing, files, skipped, source,
                   runtime_versions, verification):
    """The manifest dict; `files` maps format keys to modelrepo.manifest.file_entry() dicts."""
    size, classes = model_cfg.image_size, model_cfg.num_classes
    return new_manifest(
        name=name,
        version=version,
        model={"arch": ARCH, "variant": model_cfg.variant, "extra": model_cfg.extra,
               "mlp": model_cfg.mlp, "num_classes": classes, "image_size": size,
               "width_multiplier": model_cfg.width_multiplier},
        input_spec={"name": "x", "dtype": "float32", "shape": [-1, 3, size, size], "layout": "NCHW"},
        output_spec={"name": "logits", "dtype": "float32", "shape": [-1, classes]},
        preprocessing=preprocessing,
        files=files,
        skipped=skipped,
        source_checkpoint=source,
        runtime_versions=runtime_versions,
        verification=verification,
    )
