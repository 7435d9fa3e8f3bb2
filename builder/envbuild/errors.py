"""The one error hierarchy of envbuild, and the one map from error to exit code.

Every error envbuild raises on purpose derives from :class:`EnvbuildError` and
carries its evidence (the file and key path, the tag and log tail, the exit
code and stderr tail), so that a caller can act on it and the CLI can print it
without a traceback. :data:`EXIT_CODES` maps each class to the command line's
exit code and :func:`exit_code_for` reads it (``error.exit_code`` too); the
command line prints errors in one place (:mod:`envbuild.cli.exits`).

A plain :class:`EnvbuildError`, like any exception that is not an
``EnvbuildError``, is envbuild's own failure (:data:`EXIT_INTERNAL`): every
error raised on purpose uses the subclass that says whose problem it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

# Exit codes of the envbuild command line, with the words the README and
# `envbuild --help` show for them (a unit test holds the README to this table).
EXIT_OK = 0
EXIT_FAILURE = 1  # a check or test that envbuild ran said "no"
EXIT_USAGE = 2  # bad usage: an argument, a file one names, a setting (click's own code)
EXIT_DEFINITION = 3  # the environment definition (env.toml) is invalid
EXIT_BUILD = 4  # the image build (or a base bootstrap) failed
EXIT_ENGINE = 5  # the Docker engine or a required tool is missing or failed
EXIT_REGISTRY = 6  # an image registry refused, failed or could not be reached
EXIT_INTERNAL = 70  # envbuild itself failed (sysexits' EX_SOFTWARE): a bug to report
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_MEANINGS: Mapping[int, str] = MappingProxyType(
    {
        EXIT_OK: "success",
        EXIT_FAILURE: "a check envbuild ran said no",
        EXIT_USAGE: "bad usage: an option or argument, a file it names, or a setting",
        EXIT_DEFINITION: "invalid environment definition",
        EXIT_BUILD: "the image build (or a base bootstrap) failed",
        EXIT_ENGINE: "the Docker engine or a required tool is missing or failed",
        EXIT_REGISTRY: "an image registry could not be reached, refused the credentials, "
        "failed a push or pull, or served an image that is not what its tag claims",
        EXIT_INTERNAL: "envbuild itself failed (a bug: run with --debug and report it)",
        EXIT_INTERRUPTED: "interrupted",
    }
)

# `envbuild run` follows `docker run`: the script's own exit code, else these.
EXIT_RUN_ENGINE = 125  # envbuild or the engine failed before the script ran
EXIT_RUN_CANNOT_INVOKE = 126  # the script exists but cannot be executed
EXIT_RUN_NOT_FOUND = 127  # the script was not found


class EnvbuildError(Exception):
    """Root of every error envbuild raises; raised as such, envbuild's own failure."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def exit_code(self) -> int:
        """The command line's exit code for this error (from :data:`EXIT_CODES`)."""
        return exit_code_for(self)

    def render(self) -> str:
        """The full text shown to a person: the message and, if any, the hint."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


# Bidirectional-text controls: they reorder what a terminal shows ("Trojan Source").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str, *, keep: str = "") -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\u202e``), except ``keep``.

    Error messages quote what a person wrote (a key name, a path, a value): a
    terminal escape sequence or a bidirectional override in it must be shown,
    not obeyed. ``keep="\\n"`` keeps the line breaks of a message made of lines.
    """
    if text.isprintable() and not (_BIDI & set(text)):
        return text
    out = []
    for char in text:
        if char in keep or (char.isprintable() and char not in _BIDI) or char == " ":
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that cleanup runs; exits 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Problem(NamedTuple):
    """One thing wrong with a definition: where, what was found, what was expected.

    A named tuple, not a dataclass: this module is on the console script's
    cache-hit path, where importing :mod:`dataclasses` costs a tenth of the hit.
    """

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
        where, key, message = printable(where), printable(self.key), printable(self.message)
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        if self.hint:
            text += f"\n    hint: {printable(self.hint)}"
        return text


class DefinitionError(EnvbuildError):
    """An environment definition is invalid; lists every problem found at once."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = "invalid environment definition" + (f" ({count} problems)" if count > 1 else "")
        body = "\n".join("  " + p.render().replace("\n", "\n  ") for p in self.problems)
        super().__init__(f"{head}:\n{body}")


class UsageError(EnvbuildError):
    """Bad usage: an argument, a file it names (``--ca-bundle``) or a setting cannot be used."""


class UnsupportedAzureMLFeature(UsageError):
    """Azure ML code asked ``envbuild.azureml`` for something it does not do locally.

    Carries the Azure ML ``feature`` and the envbuild ``alternative``, which is the hint.
    """

    def __init__(self, feature: str, alternative: str, *, detail: str | None = None) -> None:
        message = f"{feature} is not supported by envbuild.azureml"
        if detail:
            message += f": {detail}"
        super().__init__(message, hint=alternative)
        self.feature = feature
        self.alternative = alternative


class UnsupportedAzureMLAttribute(UnsupportedAzureMLFeature, AttributeError):
    """An Azure ML attribute ``envbuild.azureml`` does not have (``hasattr`` says False)."""


class RenderError(EnvbuildError):
    """A template could not be rendered: a bug in envbuild (validation lets no bad value by)."""

    def __init__(self, message: str, *, template: str | None = None) -> None:
        super().__init__(message)
        self.template = template


class EngineError(EnvbuildError):
    """The Docker engine (or its client) is unreachable or answered with an error."""


class BaseMissing(EngineError):
    """An unlocked base image the engine does not hold, so its identity (part of the
    hash) is unknown; ``build`` pulls it, ``hash`` says to."""


class RegistryError(EnvbuildError):
    """An image registry could not be reached, refused the credentials, or failed a push or
    pull, or served an image that is not what its tag claims. Never carries a credential."""


class ToolMissingError(EngineError):
    """A program envbuild needs (a BuildKit-capable docker client, mmdebstrap) is missing."""


class BuildError(EnvbuildError):
    """An image build failed; carries the failing step, its exit code and the log tail."""

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


class RunFailed(RunError):
    """A run submitted through ``envbuild.azureml`` did not complete, as
    ``run.wait_for_completion()`` reports it (Azure ML raised there too).

    Carries the run id, the script's exit code (``None`` when envbuild itself
    failed before the script ran) and the run's status.
    """

    def __init__(
        self, message: str, *, run_id: str, exit_code: int | None, status: str, hint: str | None
    ) -> None:
        super().__init__(message, hint=hint)
        self.run_id = run_id
        self.script_exit_code = exit_code
        self.status = status


class RunConfigError(RunError):
    """A run's configuration is invalid (a bad option, mount, placeholder); nothing started."""


class MountPolicyError(RunConfigError):
    """A host path may not be mounted (the Docker socket, /proc, /etc, ...); carries the path."""

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class GpuDriverError(RunError):
    """The host's NVIDIA driver is missing or too old for the image's CUDA; nothing started.

    Carries the image's CUDA version, the minimum driver it needs (``None`` when
    unknown) and the driver found (``None`` when there is none).
    """

    def __init__(
        self,
        message: str,
        *,
        cuda: str,
        minimum: str | None,
        found: str | None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.cuda = cuda
        self.minimum = minimum
        self.found = found


class ScriptNotFoundError(RunError):
    """The script to run does not exist (``docker run``'s 127)."""


class ScriptNotExecutableError(RunError):
    """The script exists but cannot be executed (``docker run``'s 126)."""


class LockError(EnvbuildError):
    """A lock is missing, stale or cannot be made; or a build would not match it."""


class HistoryError(EnvbuildError):
    """The run history could not be read or written, or a run id is unknown."""


# The one map from error class to exit code; a class not named here has its
# nearest base's code.
EXIT_CODES: Mapping[type[EnvbuildError], int] = MappingProxyType(
    {
        EnvbuildError: EXIT_INTERNAL,
        RenderError: EXIT_INTERNAL,
        LockError: EXIT_FAILURE,
        UsageError: EXIT_USAGE,
        HistoryError: EXIT_USAGE,  # most often an unknown run id
        DefinitionError: EXIT_DEFINITION,
        BuildError: EXIT_BUILD,
        EngineError: EXIT_ENGINE,
        RegistryError: EXIT_REGISTRY,
        RunError: EXIT_RUN_ENGINE,
        ScriptNotExecutableError: EXIT_RUN_CANNOT_INVOKE,
        ScriptNotFoundError: EXIT_RUN_NOT_FOUND,
    }
)


def exit_code_for(error: BaseException, *, run: bool = False) -> int:
    """The exit code of the command line that failed with ``error``.

    An exception that is not an :class:`EnvbuildError` is envbuild's own
    failure. With ``run``, the codes of ``envbuild run``, which follow
    ``docker run`` so as not to be mistaken for the script's own: 126 and 127
    for a script that cannot be run, 125 for every other failure.
    """
    if isinstance(error, Interrupted):
        return 128 + error.signum
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    code = EXIT_INTERNAL
    if isinstance(error, EnvbuildError):
        code = next(EXIT_CODES[c] for c in type(error).__mro__ if c in EXIT_CODES)
    if run and code not in (EXIT_RUN_CANNOT_INVOKE, EXIT_RUN_NOT_FOUND):
        return EXIT_RUN_ENGINE
    return code
