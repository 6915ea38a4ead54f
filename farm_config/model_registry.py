"""The model registry: which files each model needs, where they come from, how they are checked.

A file's sha256 is checked after every download. Where the registry pins no digest, the
server's published one is used (Hugging Face sends the LFS sha256 as ``X-Linked-Etag``);
small text files with neither (configs, vocabularies) are recorded on first download in
``<models_dir>/checksums.json`` and checked against that record from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

HF = "https://huggingface.co"


@dataclass(frozen=True)
class ModelFile:
    name: str  # path under the models directory
    url: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    key: str
    family: str  # "sam2" | "groundingdino" | "text-encoder"
    description: str
    files: tuple[ModelFile, ...]
    config: str = ""  # architecture config the loader needs (a sam2 Hydra config, a GDINO .py)

    @property
    def checkpoint(self) -> ModelFile:
        return self.files[0]


def _sam2(size: str, short: str, mb: int) -> ModelSpec:
    name = f"sam2.1_hiera_{size}.pt"
    repo = f"facebook/sam2.1-hiera-{size.replace('_', '-')}"
    return ModelSpec(
        key=f"sam2.1-{size}",
        family="sam2",
        description=f"SAM 2.1 Hiera {size} ({mb} MB)",
        files=(ModelFile(f"sam2/{name}", f"{HF}/{repo}/resolve/main/{name}"),),
        config=f"configs/sam2.1/sam2.1_hiera_{short}.yaml",
    )


_BERT = "google-bert/bert-base-uncased"

MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        _sam2("tiny", "t", 149),
        _sam2("small", "s", 176),
        _sam2("base_plus", "b+", 309),
        _sam2("large", "l", 857),
        ModelSpec(
            key="groundingdino-swint",
            family="groundingdino",
            description="GroundingDINO Swin-T OGC (694 MB)",
            files=(
                ModelFile(
                    "groundingdino/groundingdino_swint_ogc.pth",
                    f"{HF}/ShilongLiu/GroundingDINO/resolve/main/groundingdino_swint_ogc.pth",
                ),
            ),
            config="GroundingDINO_SwinT_OGC.py",
        ),
        ModelSpec(
            key="bert-base-uncased",
            family="text-encoder",
            description="BERT base uncased, GroundingDINO's text encoder (440 MB)",
            files=tuple(
                ModelFile(f"bert-base-uncased/{name}", f"{HF}/{_BERT}/resolve/main/{name}")
                for name in ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json", "tokenizer.json")
            ),
        ),
    )
}

SAM2_SIZES = ("tiny", "small", "base_plus", "large")


def sam2_spec(size: str) -> ModelSpec:
    return MODELS[f"sam2.1-{size}"]


def default_download_set(sam2_size: str) -> list[ModelSpec]:
    """What a worker with the given SAM2 size needs."""
    return [sam2_spec(sam2_size), MODELS["groundingdino-swint"], MODELS["bert-base-uncased"]]
