"""CompatCanary, the published conformance scanner for OpenAI-style APIs, run as its users run it against the real
server on the embedded default. It is pinned and installed by scripts/install_test_tools.sh, so nothing is fetched
here. Its JSON report (schema `compatcanary.report.v1`) gives a weighted score and each probe's outcome."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server

pytestmark = pytest.mark.slow

VERSION = "0.2.2"
MODEL = "smollm2-135m"
VENV = Path(os.environ.get("PONDER_VENV", ROOT / ".venv"))
if not VENV.is_absolute():
    VENV = ROOT / VENV
CLI = VENV / "tools" / "compatcanary" / "node_modules" / "compatcanary" / "src" / "cli.js"
CHAT_PROBES = {"models.list", "chat.basic", "chat.streaming", "chat.tool_call", "chat.structured_output"}
# The `modern` profile adds the Responses API's.
RESPONSES_PROBES = {"responses.basic", "responses.streaming"}


def node() -> Path:
    wheel = VENV / "bin" / "node"  # where install_deploy_tools.sh put Node because the machine's was too old
    return wheel if wheel.exists() else Path(shutil.which("node") or "node")


def scan(server: Server, profile: str, out: Path) -> dict:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run scripts/install_test_tools.sh", pytrace=False)
    report = out / f"{profile}.json"
    # The scanner reads OPENAI_* for what its flags leave out; none of the caller's may leak into the scan.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COMPATCANARY_"))}
    command = [str(node()), str(CLI), "scan", "--base-url", server.api, "--model", MODEL, "--profile", profile]
    # --timeout is per request: generous, as other engines may share this machine's cores.
    command += ["--format", "json", "--output", str(report), "--fail-on", "never", "--timeout", "120"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"compatcanary exited {done.returncode}: {done.stderr}{done.stdout}"
    result = json.loads(report.read_text())
    assert result["schemaVersion"] == "compatcanary.report.v1"
    assert result["scanner"] == {"name": "compatcanary", "version": VERSION}
    assert result["target"] == {"baseUrl": server.api, "model": MODEL, "profile": profile}
    return result


def outcomes(report: dict) -> dict[str, str]:
    return {r["id"]: r["status"] for r in report["results"]}


def failures(report: dict) -> str:
    """Each probe that did not pass, with the scanner's reason and the server's answer, for the assertion message."""
    return "\n".join(f"{r['id']}: {r['status']}: {r['summary']} {json.dumps(r.get('error', {}))}" for r in report["results"] if r["status"] != "pass")


@pytest.mark.parametrize(("profile", "probes"), [("chat", CHAT_PROBES), ("modern", CHAT_PROBES | RESPONSES_PROBES)])
def test_every_profile_scores_100(server: Server, tmp_path: Path, profile: str, probes: set[str]) -> None:
    report = scan(server, profile, tmp_path)
    assert set(outcomes(report)) == probes
    assert report["score"] == 100, failures(report)
