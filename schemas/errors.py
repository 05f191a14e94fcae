"""The error types a user can cause. The CLI prints them as `file:line:col: message`, exit 1."""
from __future__ import annotations


class SdbakeError(Exception):
    """A mistake in the user's input (recipe, model, image, path): shown as one line, never a traceback."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, stage: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.stage = stage

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(str(self.file))
            if self.line is not None:
                parts.append(str(self.line))
                if self.column is not None:
                    parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        prefix = self.where()
        stage = f"stage {self.stage}: " if self.stage else ""
        return f"{prefix}: {stage}{self.message}" if prefix else f"{stage}{self.message}"


class RecipeError(SdbakeError):
    """The recipe file is malformed or invalid. May carry several errors, one per line."""

    def __init__(self, message: str, *, errors: list[SdbakeError] | None = None, **where):
        super().__init__(message, **where)
        self.errors = errors or []

    def __str__(self) -> str:
        if self.errors:
            return "\n".join(str(e) for e in self.errors)
        return super().__str__()


class ModelError(SdbakeError):
    """A model file is missing, ambiguous, refused (pickle), corrupt or of an unknown family."""


class PromptError(SdbakeError):
    """A prompt cannot be resolved (e.g. a wildcard file that does not exist)."""


class InputFileError(SdbakeError):
    """An image, mask or edit file named by a recipe is missing or unreadable."""


class OutputError(SdbakeError):
    """A save path escapes the output folder, or a target exists and on_exists forbids writing."""


class StateError(SdbakeError):
    """A stage received a state it cannot continue from (e.g. a split that does not line up)."""


class CacheError(SdbakeError):
    """The cache folder cannot be used."""


class LockError(SdbakeError):
    """A run with --locked found models or prompts that differ from the lock file."""


def did_you_mean(name: str, choices) -> str:
    """` (did you mean `x`?)` for the nearest of choices, or "" when none is near."""
    import difflib
    hint = difflib.get_close_matches(str(name), sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean `{hint[0]}`?)" if hint else ""
