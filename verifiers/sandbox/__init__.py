"""Running model-written and caller-written code: isolated by the operating system, judged outside the
candidate's process. `docs/sandbox.md` explains the layers and what each one stops."""

from verifiers.sandbox.isolation import SandboxUnavailable
from verifiers.sandbox.limits import SandboxLimits
from verifiers.sandbox.process import ExecutionResult
from verifiers.sandbox.sandbox import Sandbox, Verdicts

__all__ = ["ExecutionResult", "Sandbox", "SandboxLimits", "SandboxUnavailable", "Verdicts"]
