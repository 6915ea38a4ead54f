"""GroundingDINO's BERT text encoder: the downloaded one, or a generated one for random weights.

The random-weights encoder is the real BERT architecture (base, or a tiny config for tests)
saved with a generated WordPiece vocabulary, so GroundingDINO builds offline.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "person", "people", "man", "woman", "child", "car", "truck", "bus", "bike", "bicycle", "horse",
    "dog", "cat", "bird", "ball", "box", "tree", "building", "sky", "road", "hair", "hand", "face",
]  # fmt: skip

CONFIGS = {
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "bert-tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
}


def generated_vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return SPECIAL + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + WORDS


def random_text_encoder(root: Path, size: str) -> Path:
    """Write (once) a BERT folder with random weights and a generated vocabulary; return it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = root / "random" / size
    if (folder / "config.json").exists() and (folder / "vocab.txt").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = generated_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **CONFIGS[size])
    BertModel(config).save_pretrained(str(folder))
    return folder
