"""Errors the engine raises; each message says what is wrong and how to fix it."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: `code` is a short machine-readable name the API layer maps to a status."""

    code = "engine_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Overloaded(EngineError):
    """The waiting queue is full; the API answers 429 with Retry-After."""

    code = "overloaded"


class PromptTooLong(EngineError):
    """The prompt does not fit the context window or the whole KV cache budget."""

    code = "prompt_too_long"


class UnsafeModel(EngineError):
    """The folder holds pickle checkpoints or asks to run code shipped with the model."""

    code = "unsafe_model"


class UnsupportedModel(EngineError):
    """The folder is not a model this engine can serve (missing files, unknown task)."""

    code = "unsupported_model"


class EngineClosed(EngineError):
    code = "engine_closed"
