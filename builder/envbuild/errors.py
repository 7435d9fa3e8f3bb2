"""The one error hierarchy of envbuild.

Every error envbuild raises on purpose derives from :class:`EnvbuildError` and
carries its evidence (the file and key path, the tag and log tail, the exit
code and stderr tail), so that a caller can act on it and the CLI can print it
without a traceback. Each class carries its exit code (``exit_code``); the
command line maps errors to them in one place (``cli._Group``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Exit codes of the envbuild command line (documented in the README).
EXIT_OK = 0
EXIT_FAILURE = 1  # a check or test that envbuild ran said "no"
EXIT_USAGE = 2  # bad command-line usage (click's own code)
EXIT_DEFINITION = 3  # the environment definition (env.toml) is invalid
EXIT_BUILD = 4  # the image build (or a base bootstrap) failed
EXIT_ENGINE = 5  # the Docker engine or a required tool is missing or failed
EXIT_REGISTRY = 6  # an image registry refused, failed or could not be reached
EXIT_INTERRUPTED = 130  # Ctrl-C

# `envbuild run` follows `docker run`: the script's own exit code, else these.
EXIT_RUN_ENGINE = 125  # envbuild or the engine failed before the script ran
EXIT_RUN_CANNOT_INVOKE = 126  # the script exists but cannot be executed
EXIT_RUN_NOT_FOUND = 127  # the script was not found


class EnvbuildError(Exception):
    """Root of every error envbuild raises on purpose."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The full text shown to a person: the message and, if any, the hint."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where, what was found, what was expected."""

    file: str
    key: str
    message: str
    hint: str | None = None
    line: int | None = None
    column: int | None = None

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class DefinitionError(EnvbuildError):
    """An environment definition is invalid; lists every problem found at once."""

    exit_code = EXIT_DEFINITION

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = "invalid environment definition" + (f" ({count} problems)" if count > 1 else "")
        body = "\n".join("  " + p.render().replace("\n", "\n  ") for p in self.problems)
        super().__init__(f"{head}:\n{body}")


class UsageError(EnvbuildError):
    """A command was asked for something it does not offer (e.g. an unknown base)."""

    exit_code = EXIT_USAGE


class RenderError(EnvbuildError):
    """A template could not be rendered (a bug in envbuild, or an unquoted value)."""

    exit_code = EXIT_DEFINITION

    def __init__(self, message: str, *, template: str | None = None) -> None:
        super().__init__(message)
        self.template = template


class EngineError(EnvbuildError):
    """The Docker engine (or its client) is unreachable or answered with an error."""

    exit_code = EXIT_ENGINE


class RegistryError(EnvbuildError):
    """An image registry could not be reached, refused the credentials, or failed a push or
    pull, or served an image that is not what its tag claims. Never carries a credential."""

    exit_code = EXIT_REGISTRY


class ToolMissingError(EngineError):
    """A program envbuild needs (a BuildKit-capable docker client, mmdebstrap) is missing."""


class BuildError(EnvbuildError):
    """An image build failed; carries the failing step, its exit code and the log tail."""

    exit_code = EXIT_BUILD

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        step_exit_code: int | None = None,
        log_tail: Sequence[str] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.step = step
        self.step_exit_code = step_exit_code
        self.log_tail = tuple(log_tail)

    def render(self) -> str:
        parts = [self.message]
        if self.step:
            parts.append(f"  failing step: {self.step}")
        if self.step_exit_code is not None:
            parts.append(f"  exit code: {self.step_exit_code}")
        if self.log_tail:
            parts.append("  last lines of the build log:")
            parts.extend("    " + line for line in self.log_tail)
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)


class BootstrapError(BuildError):
    """Building a base image from a distribution archive failed."""


class RunError(EnvbuildError):
    """A run could not be started or supervised (not the script's own failure)."""

    exit_code = EXIT_RUN_ENGINE


class RunConfigError(RunError):
    """A run's configuration is invalid (a bad option, mount, placeholder); nothing started."""


class MountPolicyError(RunConfigError):
    """A host path may not be mounted (the Docker socket, /proc, /etc, ...); carries the path."""

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class ScriptNotFoundError(RunError):
    """The script to run does not exist (``docker run``'s 127)."""

    exit_code = EXIT_RUN_NOT_FOUND


class ScriptNotExecutableError(RunError):
    """The script exists but cannot be executed (``docker run``'s 126)."""

    exit_code = EXIT_RUN_CANNOT_INVOKE
