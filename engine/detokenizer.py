"""Incremental detokenization with stop strings.

Text is released only when it is final: never half of a multi-byte character (the decoder shows
those as U+FFFD until the rest arrives) and never the beginning of what could still become a
stop string. When a stop string appears, the text is cut before it and it is never shown."""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"
CONTEXT_TOKENS = 5  # prompt tokens decoded with the first output tokens so leading spaces come out right


class Detokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: list[int], stop: list[str]):
        self.tokenizer, self.stop = tokenizer, stop
        self.tokens = list(prompt_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)
        self.text = ""  # all decoded output text (cut at a stop string once one is found)
        self.emitted = 0  # characters of `text` already released
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        """Feed one generated token; returns newly releasable text (maybe empty)."""
        self.tokens.append(token_id)
        prefix = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        full = self._decode(self.tokens[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT):
            searched = len(self.text)
            self.text += full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            self._find_stop(searched)
        return self._release(final=False)

    def _find_stop(self, searched: int) -> None:
        if not self.stop:
            return
        longest = max(len(s) for s in self.stop)
        start = max(0, searched - longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            self.stopped = True

    def _held_back(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best

    def _release(self, final: bool) -> str:
        end = len(self.text) if (final or self.stopped) else len(self.text) - self._held_back()
        end = max(end, self.emitted)
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta

    def finish(self) -> str:
        """The generation ended: release everything left (including bytes that never completed)."""
        if not self.stopped and self.read_offset < len(self.tokens):
            prefix = self._decode(self.tokens[self.prefix_offset:self.read_offset])
            full = self._decode(self.tokens[self.prefix_offset:])
            searched = len(self.text)
            self.text += full[len(prefix):]
            self.read_offset = len(self.tokens)
            self._find_stop(searched)
        return self._release(final=True)
