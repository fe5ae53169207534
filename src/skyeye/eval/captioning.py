"""Captioning metrics exactly as pycocoevalcap computes them (the package itself, not a re-implementation).

Every hypothesis and reference goes through pycocoevalcap's PTB tokenizer (Stanford CoreNLP, lower-cased,
punctuation removed), then BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D are computed over the whole corpus with
one hypothesis per item and all of its references. The tokenizer and METEOR run on Java.
"""

from __future__ import annotations

import shutil

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


class JavaMissing(RuntimeError):
    pass


def require_java() -> None:
    if shutil.which("java") is None:
        raise JavaMissing(
            "captioning metrics need Java (pycocoevalcap's PTB tokenizer and METEOR run on it) and no `java` is on "
            "PATH; install a JRE, e.g. `apt install default-jre-headless`"
        )


def caption_scores(references: dict[str, list[str]], hypotheses: dict[str, str]) -> dict[str, float]:
    """Corpus scores in 0..1 (papers print them x100); `hypotheses` must cover exactly the referenced items."""
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
    return dict(zip(METRICS, [*bleu, meteor_score, rouge, cider], strict=True))
