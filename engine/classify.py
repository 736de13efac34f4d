"""Built-in query-type classifier: keyword, phrase and structure signals, no model, no network.

A prompt usually has two parts: the *instruction* (what the user wants) and, for summarize,
extract and translate requests, an embedded *passage* (text, code, data). Only the instruction is
scanned for intent cues, so a passage about maths or full of code does not decide the label; the
passage contributes cheap structural features (its size, code fences, stack traces, code-looking
lines). Each label collects weighted evidence; `classify` returns the best-scoring label and
`scores` exposes the evidence for explain traces.

Cost: a few regex passes over the instruction (at most ~1 KB) plus bounded scans of the rest, so
typical prompts take tens of microseconds and long ones stay well under a millisecond.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from engine import classify_cues as cues
from engine.classify_cues import CJK_CUES, LATIN_CUES

__all__ = ["LABELS", "classify", "scores"]

LABELS: tuple[str, ...] = ("code", "math", "reasoning", "creative", "summarize", "extract", "translate", "chat")

# Ties go to the label listed first: explicit "given text" tasks before open-ended ones, chat last
# because it is the fallback, not a positive finding.
_TIE_ORDER = ("translate", "summarize", "extract", "code", "math", "creative", "reasoning", "chat")

_LETTERS = "0-9a-z_à-öø-ÿß"
_HEAD_CHARS = 500  # how much of a long first paragraph can be instruction
_TAIL_CHARS = 200  # a short one-line paragraph after a passage is instruction too ("^ summarize this")
_SHORT_PROMPT = 600  # below this everything outside fences and long quotes is instruction
_SCAN_LIMIT = 4000  # structural scans of the passage stop here: enough to see what it is


_Phrase = tuple[tuple[str, bool], ...]  # (token, matches longer words too) per word of a cue
_Evidence = tuple[tuple[str, float], ...]  # (label, weight) pairs a cue adds
_Entry = tuple[_Phrase, _Evidence]

_TOKEN = re.compile(f"[{_LETTERS}]+(?:'[{_LETTERS}]+)*|\\S")


def _phrase(raw: str) -> _Phrase:
    """Tokenize a cue like the prompt is tokenized; a ``*`` marks the word before it as a prefix."""
    if raw.isalpha():  # most cues are one plain word: skip the tokenizer
        return ((raw, False),)
    if raw[-1] == "*" and raw[:-1].isalpha():
        return ((raw[:-1], True),)
    words: list[tuple[str, bool]] = []
    for tok in _TOKEN.findall(raw):
        if tok == "*" and words:
            words[-1] = (words[-1][0], True)
        else:
            words.append((tok, False))
    return tuple(words)


class _LatinIndex:
    """Cues indexed so that a prompt token costs a few dict lookups, whatever the table size."""

    __slots__ = ("heads", "loose", "pair_heads", "pairs", "singles", "stems")

    def __init__(self, cues: Mapping[str, Sequence[tuple[float, str]]]) -> None:
        merged: dict[_Phrase, dict[str, float]] = {}
        for label, tiers in cues.items():
            for weight, spec in tiers:
                for raw in spec.split("|"):
                    per_label = merged.setdefault(_phrase(raw.lower()), {})
                    per_label[label] = max(weight, per_label.get(label, weight))
        # one-word exact cues: token -> evidence
        self.singles: dict[str, _Entry] = {}
        # longer cues with two exact leading words: (word, word) -> cues, longest first
        self.pairs: dict[tuple[str, str], list[_Entry]] = {}
        # longer cues whose second word is a prefix: first word -> cues
        self.loose: dict[str, list[_Entry]] = {}
        # cues whose first word is a prefix: its first _STEM characters -> cues
        self.stems: dict[str, list[_Entry]] = {}
        for phrase, per_label in sorted(merged.items(), key=lambda kv: -len(kv[0])):
            entry = (phrase, tuple(per_label.items()))
            (first, first_prefix), rest = phrase[0], phrase[1:]
            if first_prefix:
                if len(first) < _STEM:
                    raise ValueError(f"prefix cue {first!r}* is shorter than {_STEM} characters")
                self.stems.setdefault(first[:_STEM], []).append(entry)
            elif not rest:
                self.singles[first] = entry
            elif rest[0][1]:
                self.loose.setdefault(first, []).append(entry)
            else:
                self.pairs.setdefault((first, rest[0][0]), []).append(entry)
        self.pair_heads = frozenset(first for first, _ in self.pairs)
        self.heads = self.pair_heads | self.singles.keys() | self.loose.keys()


def _cjk_table(cues: Mapping[str, Sequence[tuple[float, str]]]) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    merged: dict[str, dict[str, float]] = {}
    for label, tiers in cues.items():
        for weight, spec in tiers:
            for key in spec.split("|"):
                per_label = merged.setdefault(key.lower(), {})
                per_label[label] = max(weight, per_label.get(label, weight))
    return tuple((key, tuple(per_label.items())) for key, per_label in merged.items())


_STEM = 4
_WEAK = 2.0  # cues below this weight are generic words ...
_WEAK_CAP = 2.0  # ... and together add at most this much to a label
_EXPLICIT = 3.5  # a cue this strong is an explicit task verb ("summarize", "extract", "translate")
_MATERIAL_CAP = 4.0  # code words that only name the material of such a task add at most this much
_INDEX = _LatinIndex(LATIN_CUES)
_CJK = _cjk_table(CJK_CUES)
_CJK_FIRST = "\u3040"  # hiragana start; kanji/hanzi and katakana sit above it


class _Split(NamedTuple):
    instr: str  # what the user asks for
    passage: str  # text given to work on, outside code fences
    size: int  # characters given to work on: passage, long quotes and fenced code
    blocks: list[str]  # fenced code


def _split(text: str) -> _Split:
    """Split a prompt into the instruction and the material it refers to.

    The instruction is the first paragraph plus later short one-line paragraphs that do not look
    like data (for long prompts only the last paragraph is considered: "<passage> ^ summarize
    this"). Long quotes inside the instruction are the text to work on, so they move out too.
    """
    blocks: list[str] = []
    if "```" in text:
        blocks = cues.FENCE.findall(text)
        text = cues.FENCE.sub("\n\n", text)
    text = text.strip()
    paras = cues.PARA.split(text)
    head = paras[0]
    if len(head) > _HEAD_CHARS:
        first_line = head.split("\n", 1)[0]
        head = first_line if len(first_line) <= _HEAD_CHARS else head[:250]
    parts = [head]
    rest = paras[1:] if len(text) <= _SHORT_PROMPT else paras[-1:] if len(paras) > 1 else []
    ending = head.rstrip()[-1:]
    if rest and not cues.PRESENTS.match(head):
        if (ending and ending in "?？:：") or (len(paras[0]) <= _HEAD_CHARS and cues.DOC_REF.search(head.lower())):
            # "What's the due date on this invoice?\n\n<invoice>", "Turn this confirmation into ...\n\n<it>":
            # the request is complete and names its material, so what follows is that material
            rest = []
    for para in rest:
        if len(para) <= _TAIL_CHARS and "\n" not in para and not cues.PAYLOADISH.match(para):
            parts.append(para)
    instr = "\n".join(parts)
    passage = _passage(text, parts) if len(parts) < len(paras) or head is not paras[0] else ""
    quoted = 0
    if (len(instr) > 30 and ("'" in instr or '"' in instr or not instr.isascii())) or "「" in instr or "『" in instr:
        bare = cues.QUOTE.sub(" «…» ", instr)
        quoted, instr = max(0, len(instr) - len(bare)), bare
    return _Split(instr, passage, len(passage) + quoted + sum(map(len, blocks)), blocks)


def _passage(text: str, parts: list[str]) -> str:
    for part in parts:
        text = text.replace(part, "", 1)
    return text.strip()


def _add(acc: dict[str, float], label: str, weight: float) -> None:
    acc[label] = acc.get(label, 0.0) + weight


def _longest(toks: list[str], i: int, entries: list[_Entry], best: int, hits: list[_Entry]) -> int:
    """Extend `hits` with the cues in `entries` (longest first) that match at token `i`; return the best size."""
    n = len(toks)
    for entry in entries:
        phrase = entry[0]
        size = len(phrase)
        if size < best:
            break
        if i + size > n:
            continue
        for k, (word, is_prefix) in enumerate(phrase):
            tok = toks[i + k]
            if not (tok.startswith(word) if is_prefix else tok == word):
                break
        else:
            if size > best:
                hits.clear()
                best = size
            hits.append(entry)
    return best


def _cue_scores(toks: list[str], instr: str) -> tuple[dict[str, float], dict[str, float]]:
    """Return (evidence per label, strongest single cue per label) from the instruction's words."""
    acc: dict[str, float] = {}
    weak: dict[str, float] = {}
    peak: dict[str, float] = {}
    seen: set[_Phrase] = set()
    index = _INDEX
    heads, stems = index.heads, index.stems
    n = len(toks)
    hits: list[_Entry] = []
    resume_at = 0
    for i, tok in enumerate(toks):
        if i < resume_at:
            continue
        is_head = tok in heads
        stem_entries = stems.get(tok[:_STEM]) if len(tok) >= _STEM else None
        if not is_head and not stem_entries:
            continue
        size = 0
        if is_head:
            if tok in index.pair_heads and i + 1 < n:
                entries = index.pairs.get((tok, toks[i + 1]))
                if entries:
                    size = _longest(toks, i, entries, size, hits)
            entries = index.loose.get(tok)
            if entries:
                size = _longest(toks, i, entries, size, hits)
            if not size:
                single = index.singles.get(tok)
                if single is not None:
                    size = 1
                    hits.append(single)
        if stem_entries:
            size = _longest(toks, i, stem_entries, size, hits)
        if not size:
            continue
        best: dict[str, float] = {}
        for phrase, evidence in hits:
            if phrase in seen:
                continue
            seen.add(phrase)
            for label, weight in evidence:
                best[label] = max(weight, best.get(label, weight))
        for label, weight in best.items():
            _add(weak if weight < _WEAK else acc, label, weight)
            if weight > peak.get(label, 0.0):
                peak[label] = weight
        hits.clear()
        resume_at = i + size
    if instr and max(instr) >= _CJK_FIRST:
        for key, evidence in _CJK:
            if key in instr:
                for label, weight in evidence:
                    _add(weak if weight < _WEAK else acc, label, weight)
                    if weight > peak.get(label, 0.0):
                        peak[label] = weight
    for label, weight in weak.items():
        # many generic words ("file", "table", "error") must not outvote one clear intent cue
        _add(acc, label, min(weight, _WEAK_CAP))
    return acc, peak


def _main_verb(instr: str) -> str | None:
    """Label of the first imperative verb that starts one of the first sentences, if it is telling."""
    for k, m in enumerate(cues.LEAD_VERB.finditer(instr)):
        label = cues.MAIN_VERBS.get(m.group(1))
        if label or k >= 2:
            return label
    return None


def _conversion_target(instr: str) -> str | None:
    """What "translate/convert/put X into Y" asks for.

    Returns "code" when Y is a programming language ("translate this into idiomatic Python"),
    "translate" when Y is a human language after a conversion verb, "language" when a human
    language is only named as a target ("I need this in Japanese"), else None.
    """
    for verb in cues.CONVERT_VERB.finditer(instr):
        window = instr[verb.end() : verb.end() + 80]
        stop = cues.SENTENCE_END.search(window)
        if stop:
            window = window[: stop.start()]
        for into in cues.INTO.finditer(window):
            words = into.group(2).split()
            if words[0] in cues.PROG_WORDS or (len(words) > 1 and words[1] in cues.PROG_WORDS):
                if verb.group() not in cues.NOT_A_PORT:
                    return "code"
            if any(word in cues.LANG_WORDS for word in words):
                return "translate"
    for into in cues.INTO.finditer(instr):
        if into.group(1) != "a" and any(word in cues.LANG_WORDS for word in into.group(2).split()):
            return "language"
    return None


def _requested_artefact(instr: str) -> str | None:
    """After "write/compose/create...", the nearest head noun says whether a program or a text is wanted."""
    for m in cues.WRITE_WHAT.finditer(instr):
        for word in m.group(1).split():
            word = word.strip(",;:'\"()[]")
            if word in cues.CODE_NOUN_SET:
                return "code"
            if word in cues.CREATIVE_NOUN_SET:
                return "creative"
    return None


def _phrase_scores(
    instr: str, words: frozenset[str], peak: dict[str, float], code_struct: float, given: int
) -> dict[str, float]:
    """Evidence from phrases a word list cannot express; strong ones also raise `peak`."""
    # each pattern only runs when a word it needs is present: most prompts skip most of them
    acc: dict[str, float] = {}

    def strong(label: str, weight: float) -> None:
        _add(acc, label, weight)
        if weight > peak.get(label, 0.0):
            peak[label] = weight

    if words & cues.TARGET_WORDS:
        target = _conversion_target(instr)
        if target == "code":
            _add(acc, "code", 4.0)
            _add(acc, "translate", -4.0)
        elif target == "translate":
            _add(acc, "translate", 2.5)
        elif target == "language" and max(peak.get("summarize", 0.0), peak.get("extract", 0.0)) < _EXPLICIT:
            # "I need this in Japanese: '...'", "what's 'good luck' in Hebrew?"
            if given or cues.SHORT_QUOTE.search(instr) or ":" in instr:
                strong("translate", 3.5)
            else:
                _add(acc, "translate", 2.0)
        if words & cues.LANG_WORDS and cues.LANG_NOUN.search(instr):
            strong("translate", 3.5)  # "the French version of", "the Spanish word for"
    if (">" in instr or "→" in instr) and cues.LANG_PAIR.search(instr):
        strong("translate", 4.0)
    if words & cues.WRITE_VERBS:
        kind = _requested_artefact(instr)
        if kind:
            # "write a Python function to compute the area of ...": the deliverable is code, whatever it computes
            _add(acc, kind, 4.0 if kind == "code" else 3.0)
    if "extract" in instr and cues.REFACTOR_EXTRACT.search(instr):
        _add(acc, "code", 3.0)
        _add(acc, "extract", -4.0)
    if words & cues.NEGATORS:
        for m in cues.NEGATION.finditer(instr):
            _add(acc, "code" if m.group("code") else "math", -3.0)
    if code_struct and "what" in words and cues.WHAT_CODE_DOES.search(instr):
        _add(acc, "code", 3.0)
    if words & cues.DOC_DEIXIS and cues.IS_THIS_DOC.search(instr):
        strong("extract", 3.5)  # "is this tweet about X or Y?": classify the given text
    elif given and cues.FROM_DOC_ASK.search(instr):
        strong("extract", 3.5)  # "from this SQL query, tell me which columns ..."
    elif given and cues.ASK_DOC.search(instr):
        _add(acc, "extract", 2.0)  # "what's the due date on this invoice?"
    if "out" in words and cues.PULL_OUT.search(instr):
        strong("extract", 3.5)
    if "into" in words and cues.INTO_FORMAT.search(instr):
        strong("extract", 3.5)  # "turn this confirmation into key/value pairs"
    verb = _main_verb(instr)
    if verb:
        _add(acc, verb, 1.5)
    if ("zusammen" in words and cues.FASSE_ZUSAMMEN.search(instr)) or ("resume" in words and cues.RESUME_ES_FR.search(instr)):
        strong("summarize", 4.0)
    if ("geschichte" in instr or "gedicht" in instr or "märchen" in instr) and cues.GERMAN_COMPOUND.search(instr):
        _add(acc, "creative", 2.5)  # "Gruselgeschichte", "Liebesgedicht"
    if max(peak.get("summarize", 0.0), peak.get("extract", 0.0), peak.get("translate", 0.0)) >= 3.0:
        if cues.CREATIVE_MATERIAL.search(instr):
            _add(acc, "creative", -3.0)  # "which places are named in this poem": the poem is material
    return acc


def _structure(sp: _Split, instr: str) -> tuple[float, float]:
    """Return (code evidence, math evidence) from the shape of the prompt."""
    code = 3.0 if sp.blocks else 0.0
    material = "\n".join(sp.blocks) + "\n" + sp.passage if sp.blocks else sp.passage
    sample = material[:_SCAN_LIMIT]
    if cues.TRACE.search(sample) or cues.TRACE.search(instr):
        code += 3.0
    lines = len(cues.CODE_LINE.findall(sample)) if sample.count("\n") >= 2 else 0
    if lines >= 6:
        code += 3.0
    elif lines >= 3:
        code += 2.0
    if cues.SQL.search(sample) or cues.SQL.search(sp.instr):
        code += 2.5
    if "`" in instr and cues.INLINE_CODE.search(instr):
        code += 1.5
        instr = cues.INLINE_CODE.sub(" ", instr)
    numbers = len(cues.NUMBER.findall(instr))
    math = 0.0
    if numbers >= 2:
        if cues.QUANTITY_Q.search(instr):
            math += 2.5  # "... in 6 hours and ... in 4 hours. How long with both open?"
        if cues.MONEY_OR_PERCENT.search(instr):
            math += 1.5  # "what's a 15% tip on $64.80"
    if not lines and not sp.blocks and sp.size < _SHORT_PROMPT:
        instr = instr + "\n" + sp.passage.lower()  # "Solve the system:\n\n2x + y = 5 ..." keeps its maths
    math += min(4.0, 1.0 * len(cues.MATH.findall(instr)))
    return code, math


def scores(text: str) -> dict[str, float]:
    """Score every label for one prompt.

    Args:
        text: the user's prompt, including any embedded passage, code or data.

    Returns:
        A mapping with one float per label in `LABELS`; higher means more likely. The values are
        additive evidence (cue weights, structural signals, priors), meant for explain traces.
    """
    sp = _split(text)
    instr = " ".join(sp.instr.lower().replace("’", "'").replace("‘", "'").split())
    toks = _TOKEN.findall(instr)
    acc, peak = _cue_scores(toks, instr)
    code_struct, math_struct = _structure(sp, instr)
    phrases = _phrase_scores(instr, frozenset(toks), peak, code_struct, sp.size)
    if max(peak.get("summarize", 0.0), peak.get("extract", 0.0), peak.get("translate", 0.0)) >= _EXPLICIT:
        # "translate the comments in this code", "list the functions in this file": the code is the
        # material the explicit task works on, so its shape and the words naming it count less
        code_struct *= 0.4
        acc["code"] = min(acc.get("code", 0.0), _MATERIAL_CAP)
    _add(acc, "code", code_struct)
    _add(acc, "math", math_struct)
    for label, weight in phrases.items():
        _add(acc, label, weight)

    # CJK packs more meaning per character: UTF-8 bytes are a cheap, script-neutral length
    n = len(instr.encode())
    greeting = acc.pop("greeting", 0.0)
    acc.pop("_", None)
    # a greeting in front of a real request does not make it small talk
    _add(acc, "chat", greeting if n <= 80 else greeting * 0.3)
    if n < 80 and acc.get("reasoning", 0.0) > 0 and peak.get("reasoning", 0.0) < 3.0:
        acc["reasoning"] *= 0.6  # "should I ...?" in one line is a request for advice, not analysis
    given = sp.size
    if given >= 200 and not sp.blocks:
        for label, delta in (("chat", -1.5), ("creative", -1.0), ("reasoning", -1.0), ("math", -0.5)):
            _add(acc, label, delta)
        _add(acc, "summarize", 0.5 if given < 800 else 1.0)
    elif not given and (acc.get("summarize", 0.0) > 0 or acc.get("extract", 0.0) > 0):
        if not cues.DOC_REF.search(instr):  # "summarize/extract" with nothing given to work on
            for label in ("summarize", "extract"):
                if acc.get(label, 0.0) > 0:
                    acc[label] *= 0.6
    chat_prior = 0.0 if given >= 200 else 2.0 if n < 40 else 1.5 if n < 100 else 0.8 if n < 160 else 0.3
    _add(acc, "chat", chat_prior)
    if n >= 150 and given < 200:
        _add(acc, "reasoning", 0.8)  # a long self-contained question is usually a problem to think through
    return {label: round(acc.get(label, 0.0), 3) for label in LABELS}


def classify(text: str) -> str:
    """Return the query type of a prompt: one of `LABELS`.

    Args:
        text: the user's prompt, including any embedded passage, code or data.

    Returns:
        The label with the highest score; ties resolve in a fixed order, with ``chat`` last.
    """
    s = scores(text)
    return max(_TIE_ORDER, key=lambda label: (s[label], -_TIE_ORDER.index(label)))
