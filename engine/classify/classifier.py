"""Built-in query-type classifier: keyword, phrase and structure signals; no model, no network.

A prompt usually has two parts: the *instruction* (what the user wants) and, for summarize,
extract and translate requests, the *material* it works on (a passage, code, data, a quote). Only
the instruction is scanned for intent cues, so a passage about maths or full of code does not
decide the label ("label by what the user actually wants"); the material contributes cheap
structural features (its size, code fences, stack traces, code-looking lines, SQL).

Each label collects additive evidence: weighted cue phrases in six languages (tables in
`engine.classify.cues`), phrase patterns a word list cannot express ("translate ... into
<language>", "write a <program|poem>"), structure, and priors (chat is the fallback for short
messages). `classify` returns the best-scoring label; `scores` exposes the evidence for traces.

Cost: one tokenizer pass and a few gated regex searches over the instruction (at most ~1 KB),
plus scans of at most 4 KB of material: tens of microseconds for typical prompts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from engine.classify import cues

__all__ = ["LABELS", "classify", "scores"]

LABELS: tuple[str, ...] = ("code", "math", "reasoning", "creative", "summarize", "extract", "translate", "chat")

# Ties go to the label listed first: explicit "given text" tasks before open-ended ones, chat last
# because it is the fallback, not a positive finding.
TIE_ORDER = ("translate", "summarize", "extract", "code", "math", "creative", "reasoning", "chat")
_GIVEN_TASKS = ("summarize", "extract", "translate")

_HEAD_CHARS = 500  # how much of a long first paragraph can be instruction
_TAIL_CHARS = 200  # a later one-line paragraph this short is instruction too ("<passage>\n\n^ summarize this")
_SHORT_PROMPT = 600  # below this, every paragraph may hold instruction; above it only the first and last
_SCAN_LIMIT = 4000  # structural scans of the material stop here: enough to see what it is
_LONG_MATERIAL = 200  # material at least this long makes the prompt a "given text" task
_STEM = 4  # prefix cues are indexed by their first _STEM characters
_WEAK = 2.0  # cues below this weight are generic words ...
_WEAK_CAP = 2.0  # ... and together add at most this much to a label
_EXPLICIT = 3.5  # a cue this strong is an explicit task verb ("summarize", "extract", "translate")
_MATERIAL_CAP = 4.0  # code words that only name the material of such a task add at most this much
_GREETING_CAP = 3.0  # "hi, thanks, bye" is no more small talk than "hi"
_CJK_FIRST = "\u3040"  # hiragana start; katakana and CJK ideographs sit above it
_WIDE_FIRST, _WIDE_LAST = "\u3000", "\uffef"  # CJK punctuation .. fullwidth forms (emoji are above)

_PUNCT = ",.;:!?'\"()[]«»"
_Phrase = tuple[tuple[str, bool], ...]  # (word, matches longer words too) per word of a cue
_Evidence = tuple[tuple[str, float], ...]  # (label, weight) pairs a cue adds
_Entry = tuple[_Phrase, _Evidence]
_Tables = Mapping[str, Sequence[tuple[float, str]]]


def _phrase(raw: str) -> _Phrase:
    """Tokenize a cue like the prompt is tokenized; a ``*`` marks the word before it as a prefix."""
    if raw.isalpha():  # most cues are one plain word
        return ((raw, False),)
    if raw.replace(" ", "").replace("*", "").replace("'", "").isalpha():  # plain words: no tokenizer needed
        return tuple((word.rstrip("*"), word.endswith("*")) for word in raw.split())
    words: list[tuple[str, bool]] = []
    for tok in cues.TOKEN.findall(raw):
        if tok == "*" and words:
            words[-1] = (words[-1][0], True)
        else:
            words.append((tok, False))
    return tuple(words)


def _merge(tables: _Tables) -> dict[str, dict[str, float]]:
    """Cue -> {label: weight}; a cue listed twice for a label keeps its highest weight."""
    merged: dict[str, dict[str, float]] = {}
    for label, tiers in tables.items():
        for weight, spec in tiers:
            for raw in spec.lower().split("|"):
                per_label = merged.get(raw)
                if per_label is None:
                    merged[raw] = {label: weight}
                elif per_label.get(label, -1.0) < weight:
                    per_label[label] = weight
    return merged


class _LatinIndex:
    """Cues indexed so that a prompt token costs a few dict lookups, whatever the table size."""

    __slots__ = ("heads", "loose", "pair_heads", "pairs", "singles", "stems")

    def __init__(self, tables: _Tables) -> None:
        # one-word exact cues: word -> cue
        self.singles: dict[str, _Entry] = {}
        # longer cues with two exact leading words: (word, word) -> cues, longest first
        self.pairs: dict[tuple[str, str], list[_Entry]] = {}
        # longer cues whose second word is a prefix: first word -> cues, longest first
        self.loose: dict[str, list[_Entry]] = {}
        # cues whose first word is a prefix: its first _STEM characters -> cues, longest first
        self.stems: dict[str, list[_Entry]] = {}
        by_phrase: dict[_Phrase, dict[str, float]] = {}
        for raw, per_label in _merge(tables).items():
            phrase = _phrase(raw)
            if phrase in by_phrase:  # "vor- und nachteile" and "vor-und nachteile" are one cue
                for label, weight in per_label.items():
                    by_phrase[phrase][label] = max(weight, by_phrase[phrase].get(label, weight))
            else:
                by_phrase[phrase] = per_label
        entries = [(phrase, tuple(per_label.items())) for phrase, per_label in by_phrase.items()]
        for phrase, evidence in sorted(entries, key=lambda entry: -len(entry[0])):
            (first, first_prefix), rest = phrase[0], phrase[1:]
            if first_prefix:
                if len(first) < _STEM:
                    raise ValueError(f"prefix cue {first!r}* is shorter than {_STEM} characters")
                self.stems.setdefault(first[:_STEM], []).append((phrase, evidence))
            elif not rest:
                self.singles[first] = (phrase, evidence)
            elif rest[0][1]:
                self.loose.setdefault(first, []).append((phrase, evidence))
            else:
                self.pairs.setdefault((first, rest[0][0]), []).append((phrase, evidence))
        self.pair_heads = frozenset(first for first, _ in self.pairs)
        self.heads = self.pair_heads | self.singles.keys() | self.loose.keys()


_INDEX = _LatinIndex(cues.LATIN_CUES)
_CJK: tuple[tuple[str, _Evidence], ...] = tuple(
    (key, tuple(per_label.items())) for key, per_label in _merge(cues.CJK_CUES).items()
)


class _Split:
    """A prompt cut into what the user asks for and what it is given to work on."""

    __slots__ = ("blocks", "instr", "passage", "size")

    def __init__(self, instr: str, passage: str, size: int, blocks: list[str]) -> None:
        self.instr = instr  # what the user asks for
        self.passage = passage  # text given to work on, outside code fences
        self.size = size  # characters given to work on: passage, long quotes and fenced code
        self.blocks = blocks  # fenced code


def _split(text: str) -> _Split:
    """Split a prompt into the instruction and the material it refers to.

    The instruction is the first paragraph plus later short one-line paragraphs that do not look
    like data (for long prompts only the last paragraph can be: "<passage>\\n\\n^ summarize this"),
    unless the first paragraph already is a complete request naming its material. Long quotes
    inside the instruction are material too ("Translate: '...'").
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
    rest = paras[1:] if len(text) <= _SHORT_PROMPT else paras[-1:] if len(paras) > 1 else []
    if rest and not cues.PRESENTS.match(head):
        ending = head.rstrip()[-1:]
        if (ending and ending in "?？:：") or (len(paras[0]) <= _HEAD_CHARS and _refers_to_material(head.lower())):
            # "What's the due date on this invoice?\n\n<invoice>", "Turn this confirmation into ...\n\n<it>"
            rest = []
    parts = [head] + [p for p in rest if len(p) <= _TAIL_CHARS and "\n" not in p and not cues.PAYLOADISH.match(p)]
    instr = "\n".join(parts)
    passage = _without(text, parts) if len(parts) < len(paras) or head is not paras[0] else ""
    quoted = 0
    if (len(instr) > 30 and ("'" in instr or '"' in instr or not instr.isascii())) or "「" in instr or "『" in instr:
        bare = cues.QUOTE.sub(" «…» ", instr)
        quoted, instr = max(0, len(instr) - len(bare)), bare
    return _Split(instr, passage, len(passage) + quoted + sum(map(len, blocks)), blocks)


def _without(text: str, parts: list[str]) -> str:
    for part in parts:
        text = text.replace(part, "", 1)
    return text.strip()


def _add(acc: dict[str, float], label: str, weight: float) -> None:
    acc[label] = acc.get(label, 0.0) + weight


def _longest(toks: list[str], i: int, entries: list[_Entry], best: int, hits: list[_Entry]) -> int:
    """Collect in `hits` the longest cues of `entries` (longest first) matching at token `i`; return their size."""
    n = len(toks)
    for entry in entries:
        size = len(entry[0])
        if size < best:
            break
        if i + size > n:
            continue
        for k, (word, is_prefix) in enumerate(entry[0]):
            tok = toks[i + k]
            if not (tok.startswith(word) if is_prefix else tok == word):
                break
        else:
            if size > best:
                hits.clear()
                best = size
            hits.append(entry)
    return best


def _match_at(toks: list[str], i: int, hits: list[_Entry]) -> int:
    """Fill `hits` with the longest cues starting at token `i`; return how many tokens they cover."""
    tok, index, size = toks[i], _INDEX, 0
    if tok in index.heads:
        if tok in index.pair_heads and i + 1 < len(toks):
            entries = index.pairs.get((tok, toks[i + 1]))
            if entries:
                size = _longest(toks, i, entries, size, hits)
        entries = index.loose.get(tok)
        if entries:
            size = _longest(toks, i, entries, size, hits)
        if not size and tok in index.singles:
            size = 1
            hits.append(index.singles[tok])
    if len(tok) >= _STEM:
        entries = index.stems.get(tok[:_STEM])
        if entries:
            size = _longest(toks, i, entries, size, hits)
    return size


def _cue_scores(toks: list[str], instr: str) -> tuple[dict[str, float], dict[str, float]]:
    """Return (evidence per label, strongest single cue per label) from the instruction's words."""
    found: list[_Evidence] = []
    seen: set[_Phrase] = set()
    hits: list[_Entry] = []
    heads, stems = _INDEX.heads, _INDEX.stems
    resume_at = 0
    for i, tok in enumerate(toks):
        if i < resume_at or (tok not in heads and (len(tok) < _STEM or tok[:_STEM] not in stems)):
            continue
        size = _match_at(toks, i, hits)
        if size:
            if len(hits) == 1:
                phrase, evidence = hits[0]
                if phrase not in seen:  # a cue counts once however often it is repeated
                    seen.add(phrase)
                    found.append(evidence)
            else:
                best: dict[str, float] = {}
                for phrase, evidence in hits:
                    if phrase not in seen:
                        seen.add(phrase)
                        for label, weight in evidence:
                            if weight > best.get(label, -1.0):
                                best[label] = weight
                found.append(tuple(best.items()))
            hits.clear()
            resume_at = i + size
    if instr and max(instr) >= _CJK_FIRST:
        found.extend(evidence for key, evidence in _CJK if key in instr)
    acc: dict[str, float] = {}
    weak: dict[str, float] = {}
    peak: dict[str, float] = {}
    for evidence in found:
        for label, weight in evidence:
            target = weak if weight < _WEAK else acc
            target[label] = target.get(label, 0.0) + weight
            if weight > peak.get(label, 0.0):
                peak[label] = weight
    for label, weight in weak.items():
        # many generic words ("file", "table", "error") must not outvote one clear intent cue
        _add(acc, label, min(weight, _WEAK_CAP))
    return acc, peak


def _main_verb(instr: str) -> str | None:
    """Label of the first imperative verb that opens one of the first sentences, if it is telling."""
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
        for into in cues.INTO.finditer(window[: stop.start()] if stop else window):
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
    """After "write/compose/create ...", the nearest head noun says whether a program or a text is wanted."""
    for m in cues.WRITE_WHAT.finditer(instr):
        for word in m.group(1).split():
            word = word.strip(_PUNCT)
            if word in cues.CODE_NOUN_SET:
                return "code"
            if word in cues.CREATIVE_NOUN_SET:
                return "creative"
    return None


class _Phrases:
    """Evidence from phrase patterns; strong findings also raise the label's peak."""

    __slots__ = ("acc", "peak")

    def __init__(self, peak: dict[str, float]) -> None:
        self.acc: dict[str, float] = {}
        self.peak = peak

    def add(self, label: str, weight: float, strong: bool = False) -> None:
        _add(self.acc, label, weight)
        if strong and weight > self.peak.get(label, 0.0):
            self.peak[label] = weight

    def peak_of(self, labels: Sequence[str]) -> float:
        return max(self.peak.get(label, 0.0) for label in labels)


# Each pattern below only runs when a word it needs is present: most prompts skip most of them.
def _names_language_version(toks: list[str]) -> bool:
    for i, tok in enumerate(toks[:-1]):
        if tok in cues.LANG_WORDS:
            after = toks[i + 1]
            if after in cues.LANG_NOUN_AFTER or (after == "for" and i and toks[i - 1] == "the"):
                return True
            if after in ("word", "term") and toks[i + 2 : i + 3] == ["for"]:
                return True
    return False


def _names_language_pair(toks: list[str]) -> bool:
    for i, tok in enumerate(toks):
        if tok in cues.PAIR_ARROWS and 0 < i < len(toks) - 1:
            before, after = toks[i - 1], toks[i + 1]
            if before == "-" or before == "=":  # "->" and "=>" are two tokens
                before = toks[i - 2] if i > 1 else ""
            if before in cues.LANG_CODES and after in cues.LANG_CODES:
                return True
    return False


def _names_material(pattern: re.Pattern[str], instr: str, nouns: frozenset[str]) -> bool:
    """Whether `pattern` matches with a captured noun phrase that names given material."""
    for m in pattern.finditer(instr):
        if any(word.strip(_PUNCT) in nouns for group in m.groups() if group for word in group.split()):
            return True
    return False


def _refers_to_material(instr: str) -> bool:
    """ "this article", "the following text", "次の文章": the request points at something it was given."""
    return _names_material(cues.DOC_REF, instr, cues.DOC_NOUN_SET) or bool(cues.DOC_REF_OTHER.search(instr))


def _language_phrases(out: _Phrases, instr: str, toks: list[str], words: frozenset[str], given: int) -> None:
    if words & cues.TARGET_WORDS:
        target = _conversion_target(instr)
        if target == "code":
            out.add("code", 4.0)
            out.add("translate", -4.0)
        elif target == "translate":
            out.add("translate", 2.5)
        elif target == "language" and out.peak_of(("summarize", "extract")) < _EXPLICIT:
            # "I need this in Japanese: '...'", "what's 'good luck' in Hebrew?"
            if given or ":" in instr or cues.SHORT_QUOTE.search(instr):
                out.add("translate", 3.5, strong=True)
            else:
                out.add("translate", 2.0)
        if _names_language_version(toks):
            out.add("translate", 3.5, strong=True)  # "the French version of", "the Spanish word for"
    if (">" in instr or "→" in instr) and _names_language_pair(toks):
        out.add("translate", 4.0, strong=True)  # "EN -> FR:", "JP → EN"


def _material_phrases(out: _Phrases, instr: str, words: frozenset[str], given: int) -> None:
    if words & cues.DOC_DEIXIS and _names_material(cues.IS_THIS_DOC, instr, cues.DOC_NOUN_SET):
        out.add("extract", 3.5, strong=True)  # "is this tweet about X or Y?": classify the given text
    elif given and "from" in words and _names_material(cues.FROM_DOC_ASK, instr, cues.CODE_MATERIAL_SET):
        out.add("extract", 3.5, strong=True)  # "from this SQL query, tell me which columns ..."
    elif given and words & cues.ASK_WORDS and _names_material(cues.IN_DOC, instr, cues.DOC_NOUN_SET):
        out.add("extract", 2.0)  # "what's the due date on this invoice?"
    if "out" in words and cues.PULL_OUT.search(instr):
        out.add("extract", 3.5, strong=True)  # "pull every hashtag out of this caption"
    if "into" in words and cues.INTO_FORMAT.search(instr):
        out.add("extract", 3.5, strong=True)  # "turn this confirmation into key/value pairs"
    if "extract" in instr and cues.REFACTOR_EXTRACT.search(instr):
        out.add("code", 3.0)  # "extract this logic into its own function" is a refactoring
        out.add("extract", -4.0)
    if ("zusammen" in words and cues.FASSE_ZUSAMMEN.search(instr)) or (
        "resume" in words and cues.RESUME_ES_FR.search(instr)
    ):
        out.add("summarize", 4.0, strong=True)


def _task_phrases(out: _Phrases, instr: str, words: frozenset[str], code_struct: float, given: int) -> None:
    if words & cues.WRITE_VERBS:
        kind = _requested_artefact(instr)
        if kind:  # "write a Python function to compute the area of ...": the deliverable is code
            out.add(kind, 4.0 if kind == "code" else 3.0)
    if words & cues.NEGATORS:
        for m in cues.NEGATION.finditer(instr):  # "no code needed", "don't need the math"
            out.add("code" if m.group("code") else "math", -3.0)
    if code_struct and "what" in words and cues.WHAT_CODE_DOES.search(instr):
        out.add("code", 3.0)  # "can you summarize what this function does?"
    verb = _main_verb(instr)
    if verb and (verb != "extract" or given):  # "list the likely causes" with nothing given is not extraction
        # an imperative "list/extract/summarize/translate ..." over given material is an explicit task
        out.add(verb, 1.5)
        if given and verb in _GIVEN_TASKS:
            out.peak[verb] = max(out.peak.get(verb, 0.0), _EXPLICIT)
    if ("geschichte" in instr or "gedicht" in instr or "märchen" in instr) and cues.GERMAN_COMPOUND.search(instr):
        out.add("creative", 2.5)  # "Gruselgeschichte", "Liebesgedicht"
    if out.peak_of(_GIVEN_TASKS) >= 3.0 and cues.CREATIVE_MATERIAL.search(instr):
        out.add("creative", -3.0)  # "which places are named in this poem?": the poem is material


def _structure(sp: _Split, instr: str) -> tuple[float, float]:
    """Return (code evidence, math evidence) from the shape of the prompt."""
    code = 3.0 if sp.blocks else 0.0
    material = "\n".join(sp.blocks) + "\n" + sp.passage if sp.blocks else sp.passage
    sample = material[:_SCAN_LIMIT]
    if cues.TRACE.search(sample) or cues.TRACE.search(instr):
        code += 3.0
    lines = len(cues.CODE_LINE.findall(sample)) if sample.count("\n") >= 2 else 0
    code += 3.0 if lines >= 6 else 2.0 if lines >= 3 else 0.0
    if cues.SQL.search(sample) or cues.SQL.search(sp.instr):
        code += 2.5
    if "`" in instr and cues.INLINE_CODE.search(instr):
        code += 1.5
        instr = cues.INLINE_CODE.sub(" ", instr)
    math = 0.0
    numbers = len(cues.NUMBER.findall(instr))
    if numbers and cues.QUANTITY_Q.search(instr):
        # "... in 6 hours and ... in 4 hours. How long with both open?", "how many handshakes among 12 people?"
        math += 2.5 if numbers >= 2 else 1.5
    if numbers >= 2 and cues.MONEY_OR_PERCENT.search(instr):
        math += 1.5  # "what's a 15% tip on $64.80"
    if not lines and not sp.blocks and sp.size < _SHORT_PROMPT:
        instr = instr + "\n" + sp.passage.lower()  # "Solve the system:\n\n2x + y = 5 ..." keeps its maths
    math += min(4.0, 1.0 * len(cues.MATH.findall(instr)))
    return code, math


def _length(instr: str) -> int:
    """Length for the priors; a CJK character carries about as much as three Latin ones."""
    if instr and max(instr) >= _CJK_FIRST:
        return len(instr) + 2 * sum(1 for ch in instr if _WIDE_FIRST <= ch <= _WIDE_LAST)
    return len(instr)


def _priors(acc: dict[str, float], peak: Mapping[str, float], sp: _Split, instr: str) -> None:
    n = _length(instr)
    greeting = min(acc.pop("greeting", 0.0), _GREETING_CAP)
    acc.pop("_", None)
    if n > 80 or sp.blocks or max(peak.get(label, 0.0) for label in LABELS) >= 3.0:
        greeting *= 0.3  # "hi! can you fix this?", "hey, translate ...": a greeting in front of a task
    _add(acc, "chat", greeting)
    if n < 80 and acc.get("reasoning", 0.0) > 0 and peak.get("reasoning", 0.0) < 3.0:
        acc["reasoning"] *= 0.6  # "should I ...?" in one line asks for advice, not analysis
    given = sp.size
    if given >= _LONG_MATERIAL and not sp.blocks:
        for label, delta in (("chat", -1.5), ("creative", -1.0), ("reasoning", -1.0), ("math", -0.5)):
            _add(acc, label, delta)
        _add(acc, "summarize", 0.5 if given < 800 else 1.0)
    elif not given and (acc.get("summarize", 0.0) > 0 or acc.get("extract", 0.0) > 0):
        if not _refers_to_material(instr):  # "summarize/extract" with nothing given to work on
            for label in ("summarize", "extract"):
                if acc.get(label, 0.0) > 0:
                    acc[label] *= 0.6
    chat = 0.0 if given >= _LONG_MATERIAL else 2.0 if n < 40 else 1.5 if n < 100 else 0.8 if n < 160 else 0.3
    _add(acc, "chat", chat)
    if n >= 150 and given < _LONG_MATERIAL:
        _add(acc, "reasoning", 0.8)  # a long self-contained question is usually a problem to think through


def scores(text: str) -> dict[str, float]:
    """Score every label for one prompt.

    Args:
        text: the user's prompt, including any embedded passage, code or data.

    Returns:
        One float per label in `LABELS`, in that order; higher means more likely. The values are
        additive evidence (cue weights, structural signals, priors), meant for explain traces.
    """
    sp = _split(text)
    instr = " ".join(sp.instr.lower().replace("’", "'").replace("‘", "'").split())
    toks = cues.TOKEN.findall(instr)
    words = frozenset(toks)
    acc, peak = _cue_scores(toks, instr)
    code_struct, math_struct = _structure(sp, instr)
    phrases = _Phrases(peak)
    _language_phrases(phrases, instr, toks, words, sp.size)
    _material_phrases(phrases, instr, words, sp.size)
    _task_phrases(phrases, instr, words, code_struct, sp.size)
    if phrases.peak_of(_GIVEN_TASKS) >= _EXPLICIT:
        # "translate the comments in this code", "list the functions in this file": the code is the
        # material of an explicit task, so its shape and the words naming it count less
        code_struct *= 0.4
        acc["code"] = min(acc.get("code", 0.0), _MATERIAL_CAP)
    _add(acc, "code", code_struct)
    _add(acc, "math", math_struct)
    for label, weight in phrases.acc.items():
        _add(acc, label, weight)
    _priors(acc, peak, sp, instr)
    return {label: round(acc.get(label, 0.0), 3) for label in LABELS}


def classify(text: str) -> str:
    """Return the query type of a prompt: one of `LABELS`.

    Args:
        text: the user's prompt, including any embedded passage, code or data.

    Returns:
        The label with the highest score; ties resolve in a fixed order, with ``chat`` last.
    """
    s = scores(text)
    return max(TIE_ORDER, key=lambda label: (s[label], -TIE_ORDER.index(label)))
