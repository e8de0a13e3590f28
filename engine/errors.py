"""Errors the engine raises; each message says what is wrong and how to fix it."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: `code` is a short machine-readable name the API layer maps to a status."""

    code = "engine_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, when one is


class Overloaded(EngineError):
    """The waiting queue is full; the API answers 429 with Retry-After."""

    code = "overloaded"


class PromptTooLong(EngineError):
    """Prompt and answer (max_new_tokens) do not fit the context window, which is never more than
    the whole KV cache holds for one sequence."""

    code = "prompt_too_long"


class InvalidPrompt(EngineError):
    """The prompt holds token ids the model cannot take."""

    code = "invalid_prompt"


class UnsafeModel(EngineError):
    """The folder holds pickle checkpoints or asks to run code shipped with the model."""

    code = "unsafe_model"


class UnsupportedModel(EngineError):
    """The folder is not a model this engine can serve (missing files, unknown task)."""

    code = "unsupported_model"


class EngineClosed(EngineError):
    code = "engine_closed"
