"""Captioning metrics exactly as pycocoevalcap computes them (the package itself, not a re-implementation).

Every hypothesis and reference goes through pycocoevalcap's PTB tokenizer (Stanford CoreNLP, lower-cased,
punctuation removed), then BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D are computed over the whole corpus with
one hypothesis per item and all of its references. The tokenizer and METEOR run on Java.
"""

from __future__ import annotations

import shutil
import warnings

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


class JavaMissing(OSError):
    """An OSError, so that the command prints it as one line."""


def require_java() -> None:
    if shutil.which("java") is None:
        raise JavaMissing(
            "captioning metrics need Java (pycocoevalcap's PTB tokenizer and METEOR run on it) and no `java` is on "
            "PATH; install a JRE, e.g. `apt install default-jre-headless`, then run again"
        )


def caption_scores(
    references: dict[str, list[str]], hypotheses: dict[str, str], spice: bool = False
) -> dict[str, float]:
    """Corpus scores in 0..1 (papers print them x100); `hypotheses` must cover exactly the referenced items.

    `spice=True` adds SPICE when it can run: it needs Stanford CoreNLP models downloaded on first use and a
    Java old enough for its libraries, so when it fails the other scores are still returned and a warning
    says why SPICE is missing.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    missing, extra = sorted(set(references) - set(hypotheses)), sorted(set(hypotheses) - set(references))
    if missing or extra:
        raise ValueError(f"hypotheses and references differ: {len(missing)} without a hypothesis "
                         f"{missing[:5]}, {len(extra)} without references {extra[:5]}")  # fmt: skip
    empty = [key for key, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"{len(empty)} items have no references, e.g. {empty[:5]}")
    require_java()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": r} for r in refs] for k, refs in references.items()})
    res = tokenizer.tokenize({k: [{"caption": h}] for k, h in hypotheses.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor_score, _ = Meteor().compute_score(gts, res)  # its Java process ends when the scorer is collected
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    scores = {name: float(value) for name, value in zip(METRICS, [*bleu, meteor_score, rouge, cider], strict=True)}
    if spice:
        scores.update(_spice(gts, res))
    return scores


def _spice(gts: dict, res: dict) -> dict[str, float]:
    try:
        from pycocoevalcap.spice.spice import Spice

        score, _ = Spice().compute_score(gts, res)
    except Exception as err:  # SPICE's failures come from Java and downloads, in many shapes
        warnings.warn(f"SPICE skipped: it could not run here ({type(err).__name__}: {err})", stacklevel=3)
        return {}
    return {"SPICE": float(score)}
