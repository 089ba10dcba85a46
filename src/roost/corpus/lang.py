"""Language identification per post with py3langid (langid.py's model), stored on the post as ISO 639-1.

Part of `roost ingest`. URLs, mentions and the '#' of hashtags are removed before identification; texts that
are too short, or where the model is unsure, get "und" — unless the source declared a language.
"""

from __future__ import annotations

import re
from functools import lru_cache

_STRIP = re.compile(r"https?://\S+|(?<!\w)@\w+(?:@[\w.-]+)?|#")
MIN_CONFIDENCE = 0.5


@lru_cache(maxsize=1)
def _identifier():  # type: ignore[no-untyped-def]
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str, min_chars: int = 12) -> tuple[str, float]:
    """Return (language code or 'und', probability)."""
    body = _STRIP.sub(" ", text).strip()
    if sum(c.isalpha() for c in body) < min_chars:
        return "und", 0.0
    lang, prob = _identifier().classify(body)
    if prob < MIN_CONFIDENCE:
        return "und", float(prob)
    return str(lang), float(prob)


def choose(declared: str | None, text: str, min_chars: int = 12) -> str:
    """The language stored on a post: a declared code (normalised to its primary subtag) else the detected one."""
    if declared:
        code = declared.strip().lower().replace("_", "-").split("-")[0]
        if code.isalpha() and 2 <= len(code) <= 3 and code not in ("und", "qme", "qht", "zxx", "qam", "qct", "qst"):
            return code
    return detect(text, min_chars)[0]
