"""A local Salesforce org for tests and benchmarks, spoken to by the unmodified simple-salesforce client.

Start one with `optout-sync sandbox` or, from Python, `with running_sandbox(generate=100) as sb:`.
"""

from sandbox.config import SandboxConfig
from sandbox.runner import Sandbox, prepare, running_sandbox

__all__ = ["Sandbox", "SandboxConfig", "prepare", "running_sandbox"]
